"""Trackers checked before Ray (maspo_verl/preflight/trackers.py) and the key passed to every Ray
worker without being printed (maspo_verl/compat.py's ray_init_with_env, on verl's own run_ppo)."""

import functools

import pytest
import verl  # noqa: F401
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from maspo_verl import compat
from maspo_verl.preflight.trackers import WANDB_KEY, WorkerEnv, check_trackers

KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a wandb key; not a real one


@functools.cache
def _composed(*overrides):
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        return compose("maspo_trainer", overrides=list(overrides))


def _config(logger=("console", "wandb")):
    config = OmegaConf.create(OmegaConf.to_container(_composed("recipe=paper_7b", "algorithm=grpo")))
    with open_dict(config):
        config.trainer.logger = list(logger)
    return config


@pytest.fixture()
def no_wandb_login(monkeypatch, tmp_path):
    """A machine where nobody ran `wandb login` or exported a key."""
    for name in (WANDB_KEY, "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_wandb_without_a_key_is_refused_naming_both_fixes(no_wandb_login):
    with pytest.raises(ValueError) as refusal:
        check_trackers(_config())
    message = str(refusal.value)
    assert "trainer.logger=['console', 'wandb'] logs to wandb, but this machine has no wandb key" in message
    assert "`wandb login`" in message and f"`export {WANDB_KEY}=<your key>`" in message
    assert f"{no_wandb_login} has no entry for api.wandb.ai" in message
    assert "trainer.logger=[console,tensorboard]" in message and "WANDB_MODE=offline" in message


def test_a_key_in_the_environment_goes_to_the_workers_and_is_never_shown(no_wandb_login, monkeypatch):
    monkeypatch.setenv(WANDB_KEY, KEY)
    monkeypatch.setenv("WANDB_ENTITY", "my-team")
    lines, env = check_trackers(_config())
    assert env == {WANDB_KEY: KEY, "WANDB_ENTITY": "my-team"} and isinstance(env, WorkerEnv)
    assert KEY not in repr(env) and KEY not in str(env) and KEY not in f"{env}" and KEY not in " ".join(lines)
    assert lines == [f"wandb: key from ${WANDB_KEY}, passed to every Ray worker in the job's runtime env (not shown)"]


@pytest.mark.parametrize("base_url,host", [(None, "api.wandb.ai"), ("https://wandb.example.org", "wandb.example.org")])
def test_a_wandb_login_is_found_in_netrc_for_the_servers_host(no_wandb_login, monkeypatch, base_url, host):
    no_wandb_login.write_text(f"machine {host}\n  login user\n  password {KEY}\n")
    no_wandb_login.chmod(0o600)
    if base_url:
        monkeypatch.setenv("WANDB_BASE_URL", base_url)
    lines, env = check_trackers(_config())
    assert env[WANDB_KEY] == KEY and f"key from {no_wandb_login} (wandb login)" in lines[0]


def test_a_login_for_another_host_does_not_count(no_wandb_login, monkeypatch):
    no_wandb_login.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    no_wandb_login.chmod(0o600)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    with pytest.raises(ValueError, match="has no entry for wandb.example.org"):
        check_trackers(_config())


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_offline_wandb_needs_no_key(no_wandb_login, monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    lines, env = check_trackers(_config())
    assert env == {"WANDB_MODE": mode} and "no key needed" in lines[0]


def test_without_wandb_nothing_is_needed_or_passed(no_wandb_login):
    lines, env = check_trackers(_config(logger=("console", "tensorboard")))
    assert env == {} and "no key needed" in lines[0]


class _RayInitCalled(Exception):
    pass


def test_verls_run_ppo_passes_the_key_to_every_worker_without_printing_it(monkeypatch, capsys):
    """verl's own run_ppo (as main_ppo runs it through compat.run_verl_main): it prints its ray.init
    arguments, then calls ray.init; the key joins the job's runtime env there, beside verl's own
    variables, and appears in no output."""
    import ray
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo

    calls = []

    def record(*args, **kwargs):
        calls.append(kwargs)
        raise _RayInitCalled

    monkeypatch.setattr(ray, "init", record)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    config = _config()
    with compat.ray_init_with_env(WorkerEnv({WANDB_KEY: KEY})), pytest.raises(_RayInitCalled):
        run_ppo(config, task_runner_class=TaskRunnerV1)
    env_vars = calls[0]["runtime_env"]["env_vars"]
    assert env_vars[WANDB_KEY] == KEY and env_vars["TOKENIZERS_PARALLELISM"] == "true"  # verl's own stay
    printed = capsys.readouterr()
    assert "ray init kwargs" in printed.out and KEY not in printed.out + printed.err
    assert ray.init is record  # the patch ends with the block


def test_without_a_worker_env_ray_init_is_untouched(monkeypatch):
    import ray

    original = ray.init
    with compat.ray_init_with_env({}):
        assert ray.init is original
