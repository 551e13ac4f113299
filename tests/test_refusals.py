"""Every command refuses bad input the same way (maspo_verl/refusal.py): `<command>: error:
<message>` on stderr, nothing else (no traceback of the check, no Hydra "Error executing job"),
exit status 2; `--debug` or HYDRA_FULL_ERROR=1 shows the traceback. The evaluator's refusals:
tests/test_eval.py (`_run_expecting_error`); its `--debug`: test_eval's missing data file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from maspo_verl.refusal import DEBUG_ENV, EXIT_REFUSED

ROOT = Path(__file__).resolve().parents[1]
SDPA = "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"
SP_REFUSAL = (
    "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2 with "
    "actor_rollout_ref.model.override_config.attn_implementation=sdpa is not allowed"
)


def _run(command: list[str], debug: bool = False, **env) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != DEBUG_ENV}
    environment.update(env, PYTHON=sys.executable)
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=environment)


def assert_refused(result: subprocess.CompletedProcess, command: str, message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_REFUSED, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "Error executing job" not in result.stderr


def test_a_shell_recipe_dry_run_prints_the_refusal_and_nothing_else(tmp_path):
    """The issue's case: the 14B recipe runs sequence parallelism 2, which sdpa cannot."""
    result = _run(["bash", "examples/paper/paper_14b_maspo.sh", SDPA], DRY_RUN="1", MASPO_DATA_DIR=str(tmp_path))
    assert_refused(result, "maspo_verl.main_ppo", SP_REFUSAL)


def test_main_ppo_refuses_before_ray_and_debug_shows_the_traceback():
    """A training launch (no dry run): refused by preflight's first check, before the kit is built."""
    command = [sys.executable, "-m", "maspo_verl.main_ppo", "+kit=tiny_cpu", "algorithm=grpo", "trainer.use_v1=false"]
    assert_refused(_run(command), "maspo_verl.main_ppo", "trainer.use_v1=False is not allowed")
    debug = _run([*command, "--debug"])
    assert debug.returncode not in (0, EXIT_REFUSED)
    assert "Traceback" in debug.stderr and "check_trainer" in debug.stderr
    assert "trainer.use_v1=False is not allowed" in debug.stderr


def test_a_value_a_config_class_refuses_is_a_refusal_too(capsys):
    """verl builds the policy-loss config through Hydra's instantiate (in its validate_config, on
    the driver before Ray, and in the dry run), which wraps the class's ValueError."""
    from hydra.errors import InstantiationException

    from maspo_verl.refusal import refusals
    from verl_config import build_actor_config, compose_ours

    config = compose_ours("algorithm=maspo", "actor_rollout_ref.actor.policy_loss.sigma_base=-1")
    with pytest.raises(SystemExit) as exited, refusals("maspo_verl.main_ppo"):
        build_actor_config(config)
    assert exited.value.code == EXIT_REFUSED
    assert capsys.readouterr().err == (
        "maspo_verl.main_ppo: error: MASPO setting actor_rollout_ref.actor.policy_loss.sigma_base=-1 is not "
        "allowed: it must be a finite number > 0.\n"
    )
    with pytest.raises(InstantiationException), refusals("maspo_verl.main_ppo", debug=True):
        build_actor_config(config)
    with pytest.raises(InstantiationException, match="no_such_class"), refusals("maspo_verl.main_ppo"):
        build_actor_config(
            compose_ours("algorithm=maspo", "actor_rollout_ref.actor.policy_loss._target_=no_such_class")
        )


def test_bench_refuses_a_misspelt_setting_of_a_recipe_sweep(capsys):
    from maspo_verl.bench.__main__ import main

    argv = ["--recipe", "paper_1p5b", "--presets", "maspo", "--seeds", "0", "--plan",
            "+actor_rollout_ref.actor.policy_loss.sigma_bse=2"]  # fmt: skip
    assert main(argv) == EXIT_REFUSED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("maspo_verl.bench: error: Unknown setting actor_rollout_ref.actor.policy_loss.sigma_bse=2")
    assert "Did you mean 'sigma_base'?" in line
    with pytest.raises(ValueError, match="sigma_bse"):
        main([*argv, "--debug"])


def test_bench_refuses_an_override_hydra_cannot_apply(capsys):
    from maspo_verl.bench.__main__ import main

    assert main(["--recipe", "paper_1p5b", "--presets", "grpo", "--seeds", "0", "--plan", "no_such_key=1"]) == 2
    err = capsys.readouterr().err  # Hydra's message, two lines: what failed, and the `+key=` that appends
    assert err.startswith("maspo_verl.bench: error: Could not override 'no_such_key'") and "Traceback" not in err


def test_data_refuses_an_unknown_set(tmp_path, capsys):
    from maspo_verl.data.math_sets import main

    argv = ["prepare", "aime23", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == EXIT_REFUSED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("maspo_verl.data: error: unknown set 'aime23'")
    with pytest.raises(ValueError, match="unknown set 'aime23'"):
        main([*argv, "--debug"])


def test_the_exit_status_is_documented():
    reproducing = (ROOT / "docs" / "reproducing.md").read_text()
    assert f"exit status {EXIT_REFUSED}" in reproducing and "HYDRA_FULL_ERROR=1" in reproducing
    assert "--debug" in reproducing
