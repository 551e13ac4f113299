"""Preflight's checks for the first GPU launch (maspo_verl/preflight/): the legacy trainer,
sequence parallelism and attention, the attention package, and the two warnings (a trust region
that cannot act; BAPO's bounds chosen per micro-batch).

Configs are composed as `python -m maspo_verl.main_ppo` composes them, unresolved where a kit's
`${maspo_kit:...}` would build the kit; no check here needs data files except the wiring tests,
which use the paper fixtures. The attention package is faked with a patched
`importlib.util.find_spec`, so both answers run on this CPU machine.
"""

import copy
import functools
import importlib.util
import re
import warnings
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
import torch
import verl  # noqa: F401  (imports our plugin)
from fixtures import math_sources as fx
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from maspo_verl import preflight as pf
from maspo_verl.algos import LOSSES
from maspo_verl.bench.sweep import CONTROLS, KIT_PRESETS, REGIMES, plan_kit

ROOT = Path(__file__).resolve().parents[1]
KITS = sorted(path.stem for path in (ROOT / "configs" / "kit").glob("*.yaml"))
RECIPES = sorted(path.stem for path in (ROOT / "configs" / "recipe").glob("paper_*.yaml"))
PRESETS = sorted(path.stem for path in (ROOT / "configs" / "algorithm").glob("*.yaml") if path.stem[0] != "_")
ATTENTION = "actor_rollout_ref.model.override_config.attn_implementation"

# the recipes log to wandb; preflight refuses that on a machine without a key
pytestmark = pytest.mark.usefixtures("wandb_key")


@functools.cache
def _composed(overrides: tuple):
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        return compose("maspo_trainer", overrides=list(overrides))


def _compose(*overrides, changes=None):
    """A fresh copy of the composed config (each composition is composed once), unresolved (a
    kit's ${maspo_kit:...} builds the kit when resolved), with `changes` ({"a.b": value}) set."""
    config = copy.deepcopy(_composed(overrides))
    with open_dict(config):
        for key, value in (changes or {}).items():
            OmegaConf.update(config, key, value, force_add=True)
    return config


@pytest.fixture()
def packages(monkeypatch):
    """`packages(present=..., missing=...)`: find_spec answers as if those modules were (not) installed."""
    real = importlib.util.find_spec

    def fake(present=(), missing=()):
        def find_spec(name, package=None):
            if name in missing:
                return None
            if name in present:
                return ModuleSpec(name, None)
            return real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return fake


KIT = ("+kit=tiny_cpu", "algorithm=grpo")
PAPER_7B = ("recipe=paper_7b", "algorithm=grpo")
PAPER_14B = ("recipe=paper_14b", "algorithm=grpo")


# ----------------------------------------------------------------------------- legacy trainer


def test_the_legacy_trainer_is_refused_before_ray_and_before_the_data(tmp_path):
    """Refused by preflight (main_ppo and --dry-run), first: the data paths do not exist, and a
    refusal that came later would be a FileNotFoundError."""
    from maspo_verl.main_ppo import prepare

    missing = str(tmp_path / "none.parquet")
    config = _compose(*KIT, changes={"trainer.use_v1": False, "data.train_files": missing, "data.val_files": missing})
    message = r"trainer.use_v1=False is not allowed: .*v1 trainer only.*trainer.use_v1=True.*algorithm.filter_groups"
    for check in (pf.preflight, pf.dry_run, prepare):
        with pytest.raises(ValueError, match=message):
            check(config)
    pf.check_trainer(_compose(*KIT))  # verl's default, use_v1=True


# ----------------------------------------------------------------------------- the agent loop

MANAGER = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"


@pytest.mark.parametrize(
    "changes, refused",
    [
        (
            {"trainer.v1.trainer_mode": "separate_async"},
            r"trainer_mode=separate_async is not allowed: .*in-flight counts",
        ),
        ({"reward.reward_model.enable": True}, r"reward_model.enable=True is not allowed: .*rule-based rewards"),
        ({MANAGER: None}, r"reward.num_workers=0 is not allowed with .*agent_loop_manager_class=None: .*one of"),
        ({MANAGER: None, "reward.num_workers": 1}, None),  # verl's own manager with a reward worker
        ({"reward.num_workers": 2}, None),  # the small-run manager ignores reward workers it does not need
    ],
)
def test_the_small_run_agent_loop_is_refused_where_it_cannot_serve(tmp_path, changes, refused):
    """The kit's manager (sync trainer, rule-based reward) and its reward.num_workers: 0 are refused
    by preflight where they would fail or mislead inside Ray; before the data is read."""
    missing = str(tmp_path / "none.parquet")
    config = _compose(*KIT, changes={**changes, "data.train_files": missing, "data.val_files": missing})
    if refused is None:
        pf.check_agent_loop(config)
        with pytest.raises(FileNotFoundError):  # the next step, the data, is reached
            pf.preflight(config)
        return
    for check in (pf.check_agent_loop, pf.preflight):
        with pytest.raises(ValueError, match=refused):
            check(config)


def test_verl_still_has_no_group_filter_in_its_legacy_trainer():
    """The refusal's reason: verl 0.9.1's legacy trainer never reads algorithm.filter_groups."""
    import verl.trainer.main_ppo_v0 as legacy_main
    import verl.trainer.ppo.ray_trainer as legacy_trainer

    for module in (legacy_main, legacy_trainer):
        assert "filter_groups" not in Path(module.__file__).read_text(), module.__name__


# ----------------------------------------------------------------------------- sequence parallelism


@pytest.mark.parametrize(
    "changes,refused",
    [
        ({}, None),  # flash_attention_2, verl's default
        ({ATTENTION: "flash_attention_3"}, None),
        ({ATTENTION: "sdpa"}, "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2 with {}=sdpa"),
        ({ATTENTION: "eager"}, "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2 with {}=eager"),
        ({ATTENTION: "sdpa", "actor_rollout_ref.actor.ulysses_sequence_parallel_size": 1,
          "actor_rollout_ref.ref.ulysses_sequence_parallel_size": 1}, None),
    ],
    ids=["fa2-default", "fa3", "sdpa", "eager", "sdpa-no-sp"],
)  # fmt: skip
def test_sequence_parallelism_needs_flash_attention(changes, refused):
    """The 14B recipe runs Ulysses SP 2 on actor and reference."""
    config = _compose(*PAPER_14B, changes=changes)
    if refused is None:
        pf.check_sequence_parallel(config)
        return
    with pytest.raises(ValueError, match=re.escape(refused.format(ATTENTION)) + " is not allowed"):
        pf.check_sequence_parallel(config)


@pytest.mark.parametrize(
    "changes,refused_key",
    [
        ({"actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size": 2},
         "actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=2"),
        ({"actor_rollout_ref.ref.ulysses_sequence_parallel_size": 2, "actor_rollout_ref.actor.use_kl_loss": True},
         "actor_rollout_ref.ref.ulysses_sequence_parallel_size=2"),
        ({"actor_rollout_ref.ref.ulysses_sequence_parallel_size": 2}, None),  # no KL: no reference model runs
        ({"algorithm.adv_estimator": "gae", "critic.fsdp.ulysses_sequence_parallel_size": 2,
          "critic.model.override_config.attn_implementation": "sdpa"}, "critic.fsdp.ulysses_sequence_parallel_size=2"),
    ],
    ids=["actor-engine-key", "ref-with-kl", "ref-unused", "critic"],
)  # fmt: skip
def test_every_key_verl_reads_for_sequence_parallelism(changes, refused_key):
    """On the CPU kit (sdpa), each role's SP keys, for the roles the run uses."""
    config = _compose(*KIT, changes=changes)
    if refused_key is None:
        pf.check_sequence_parallel(config)
    else:
        with pytest.raises(ValueError, match=rf"{re.escape(refused_key)} with .*=sdpa is not allowed"):
            pf.check_sequence_parallel(config)


def test_the_data_parallel_size_counts_the_engine_sp_key():
    two_ranks = ("+kit=tiny_cpu_dp2", "algorithm=grpo")
    assert pf.check_batch_sizes(_compose(*two_ranks))["dp"] == 2
    sp = {"actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size": 2}
    assert pf.check_batch_sizes(_compose(*two_ranks, changes=sp))["dp"] == 1


# ----------------------------------------------------------------------------- attention package


def test_a_cuda_run_without_flash_attn_is_refused_naming_the_setting_and_the_install_line(packages):
    config = _compose(*PAPER_7B)
    assert config.trainer.device == "cuda"
    packages(missing={"flash_attn", "torch_npu"})
    with pytest.raises(ValueError) as refused:
        pf.check_attention_packages(config)
    message = str(refused.value)
    assert f"{ATTENTION}=flash_attention_2 needs the flash_attn package" in message
    assert pf.FLASH_ATTN_INSTALL in message and f"{ATTENTION}=sdpa" in message
    report = pf.check_attention_packages(config, refuse=False)
    assert report[0].startswith("actor: flash_attention_2 NOT INSTALLED HERE") and pf.FLASH_ATTN_INSTALL in report[0]
    packages(present={"flash_attn"}, missing={"torch_npu"})
    assert pf.check_attention_packages(config) == ["actor: flash_attention_2 (flash_attn installed)"]


@pytest.mark.parametrize(
    "attention,module",
    [
        ("flash_attention_3", "flash_attn_interface"),
        ("paged|flash_attention_2", "flash_attn"),
        ("kernels-community/flash-attn2", "kernels"),
        ("sdpa", None),
        ("eager", None),
    ],
)
def test_each_attention_needs_its_own_package(packages, attention, module):
    config = _compose(*PAPER_7B, changes={ATTENTION: attention})
    packages(missing={"flash_attn", "flash_attn_interface", "kernels", "torch_npu"})
    if module is None:
        assert pf.check_attention_packages(config) == [f"actor: {attention}"]
        return
    with pytest.raises(ValueError, match=rf"={re.escape(attention)} needs the {module} package"):
        pf.check_attention_packages(config)
    packages(present={module}, missing={"torch_npu"})
    assert pf.check_attention_packages(config) == [f"actor: {attention} ({module} installed)"]


@pytest.mark.parametrize("where", ["cpu", "npu", "torch_npu"])
def test_only_cuda_runs_need_the_package(packages, where):
    """On CPU the kit uses sdpa anyway; on Ascend, flash_attention_2 is torch_npu's, and verl turns
    trainer.device=cuda into npu when torch_npu is there."""
    device = {"cpu": "cpu", "npu": "npu", "torch_npu": "cuda"}[where]
    config = _compose(*PAPER_7B, changes={"trainer.device": device})
    packages(present={"torch_npu"} if where == "torch_npu" else (), missing={"flash_attn"})
    assert pf.check_attention_packages(config) == ["actor: flash_attention_2"]


def test_the_critic_model_is_checked_when_a_critic_runs(packages):
    config = _compose(*KIT, changes={"trainer.device": "cuda", "algorithm.adv_estimator": "gae"})
    packages(missing={"flash_attn", "torch_npu"})
    with pytest.raises(ValueError, match=r"critic.model.override_config.attn_implementation=flash_attention_2 needs"):
        pf.check_attention_packages(config)


def test_the_install_line_is_the_one_the_docs_give():
    from importlib.metadata import requires

    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    reproducing = (ROOT / "docs" / "reproducing.md").read_text()
    for text in (install, reproducing):
        assert f'pip install -e ".[vllm,math]" && {pf.FLASH_ATTN_INSTALL}' in text
    # the flash-attn version verl 0.9.1's fsdp extra pins
    assert 'flash-attn==2.8.3; extra == "flash-attn-cu130torch211"' in requires("verl")
    assert "flash-attn==2.8.3" in pf.FLASH_ATTN_INSTALL


# ----------------------------------------------------------------------------- trust region


def _minimal(train_batch, mini, epochs=1, bypass=False, rollout_is=None):
    return OmegaConf.create({
        "data": {"train_batch_size": train_batch},
        "actor_rollout_ref": {"actor": {"ppo_mini_batch_size": mini, "ppo_epochs": epochs,
                                        "policy_loss": {"loss_mode": "maspo"}}},
        "algorithm": {"rollout_correction": {"bypass_mode": bypass, "rollout_is": rollout_is}},
    })  # fmt: skip


@pytest.mark.parametrize(
    "train_batch,mini,n,dp,epochs",
    [(8, 8, 8, 1, 1), (8, 8, 8, 2, 1), (512, 512, 16, 8, 1), (8, 2, 8, 1, 1), (8, 8, 4, 2, 2), (16, 8, 2, 4, 1)],
)
def test_updates_per_rollout_are_counted_as_verls_engine_worker_counts_them(train_batch, mini, n, dp, epochs):
    """verl's train_mini_batch: each rank gets train_batch x n / dp sequences and iterates over them
    in mini-batches of mini x n / dp for ppo_epochs epochs (tu.make_iterator); one iteration, and
    only then, is a trust region that cannot act."""
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu

    per_rank = train_batch * n // dp
    data = TensorDict({"x": torch.zeros(per_rank)}, batch_size=[per_rank])
    updates = sum(1 for _ in tu.make_iterator(data, mini_batch_size=mini * n // dp, epochs=epochs, seed=0))
    warned = pf.trust_region_warnings(_minimal(train_batch, mini, epochs))
    assert bool(warned) == (updates == 1)


def test_the_warning_names_the_keys_and_rollout_correction_counts_only_in_bypass_mode():
    (message,) = pf.trust_region_warnings(_minimal(8, 8))
    for key in ("data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
                "actor_rollout_ref.actor.ppo_epochs=1", "algorithm.rollout_correction.bypass_mode=False"):  # fmt: skip
        assert key in message
    assert "ratio pi/pi_old is 1 at every token" in message
    assert pf.trust_region_warnings(_minimal(8, 8, bypass=True)) == []  # pi_old = the rollout's log-probs
    assert pf.trust_region_warnings(_minimal(8, 8, rollout_is="token"))  # IS weights leave the ratio at 1


def _configs_that_ship():
    """Every kit preset, every bench regime (as the sweep composes it) and every paper recipe."""
    cases = [(f"kit {kit}", (f"+kit={kit}",)) for kit in KITS]
    for task in KIT_PRESETS:
        for spec in plan_kit(["grpo"], [0], list(REGIMES), 20, 10, task=task):  # grpo and the controls
            overrides = tuple(o for o in spec.overrides() if "algorithm=" not in o)
            cases.append((f"bench {task} {spec.regime} {spec.preset}", overrides))
    return cases + [(f"recipe {recipe}", (f"recipe={recipe}",)) for recipe in RECIPES]


SHIPPED = _configs_that_ship()


@pytest.mark.parametrize("name,overrides", SHIPPED, ids=[name for name, _ in SHIPPED])
def test_no_kit_bench_regime_or_recipe_leaves_the_trust_region_idle(name, overrides):
    """With grpo; the next test shows that no preset changes what decides it."""
    assert pf.trust_region_warnings(_compose(*overrides, "algorithm=grpo")) == [], name


def test_the_bench_regimes_are_composed_on_the_bench_kits():
    bench = [(name, overrides) for name, overrides in SHIPPED if name.startswith("bench")]
    assert len(bench) == len(KIT_PRESETS) * len(REGIMES) * (1 + len(CONTROLS))  # grpo and each control
    assert all(f"+kit={KIT_PRESETS[name.split()[1]]}" in overrides for name, overrides in bench)


TRUST_REGION_KEYS = ("data.train_batch_size", "actor_rollout_ref.actor.ppo_mini_batch_size",
                     "actor_rollout_ref.actor.ppo_epochs", "algorithm.rollout_correction")  # fmt: skip


def test_no_preset_changes_what_decides_the_trust_region():
    """Every file of configs/algorithm (the presets and what they include): none sets a key that
    decides whether the trust region can act, so the configs above hold with every preset."""
    for path in sorted((ROOT / "configs" / "algorithm").glob("*.yaml")):
        preset = OmegaConf.load(path)
        for key in TRUST_REGION_KEYS:
            assert OmegaConf.select(preset, key) is None, (path.name, key)


# ----------------------------------------------------------------------------- BAPO micro-batches


def test_bapo_with_dynamic_batch_size_is_warned_and_counts_micro_batches_as_verl_packs_them():
    """The 7B recipe: 32 x 16 / 8 = 64 sequences per GPU and update, micro-batches of at most 20480
    tokens. At the longest lengths verl's packing makes as many micro-batches as the warning says."""
    from tensordict import TensorDict
    from verl.utils.seqlen_balancing import rearrange_micro_batches

    config = _compose("recipe=paper_7b", "algorithm=bapo")
    (message,) = pf.bapo_micro_batch_warnings(config, dp=8)
    for key in ("loss_mode=bapo", "use_dynamic_bsz=True", "ppo_max_token_len_per_gpu=20480", "(64 sequences)",
                "per micro-batch", "ppo_micro_batch_size_per_gpu=64"):  # fmt: skip
        assert key in message
    most = int(re.search(r"up to (\d+) micro-batches here", message).group(1))
    longest = config.data.max_prompt_length + config.data.max_response_length
    input_ids = torch.nested.nested_tensor([torch.zeros(longest, dtype=torch.long)] * 64, layout=torch.jagged)
    micro_batches, _ = rearrange_micro_batches(TensorDict({"input_ids": input_ids}, batch_size=[64]), 20480)
    assert len(micro_batches) == most == 32


@pytest.mark.parametrize(
    "overrides,dp,choices",
    [
        (("+kit=tiny_cpu", "algorithm=bapo"), 1, None),  # 2 x 8 sequences, one micro-batch of 16
        (("+kit=tiny_cpu_dp2", "algorithm=bapo"), 2, 2),  # 8 per rank, micro-batches of 4
        (("+kit=tiny_cpu_dp2", "algorithm=grpo"), 2, None),
        (PAPER_7B, 8, None),
    ],
)
def test_bapo_micro_batch_warning_only_for_bapo_with_several_micro_batches(overrides, dp, choices):
    found = pf.bapo_micro_batch_warnings(_compose(*overrides), dp)
    if choices is None:
        assert found == []
    else:
        (message,) = found
        assert f"makes {choices} choices" in message and "ppo_micro_batch_size_per_gpu=4" in message


def test_the_docs_say_what_per_micro_batch_changes():
    algorithms = (ROOT / "docs" / "algorithms.md").read_text()
    bapo = algorithms.split("## BAPO", 1)[1].split("\n## ", 1)[0]
    phrases = ("Per micro-batch, not per update", "use_dynamic_bsz", "ppo_max_token_len_per_gpu", "PreflightWarning")
    assert all(phrase in bapo for phrase in phrases), bapo


# ----------------------------------------------------------------------------- wiring: preflight and the dry run


@pytest.mark.parametrize("preset", [*(spec.name for spec in LOSSES), "grpo"])
def test_the_dry_run_prints_every_setting_of_the_loss_that_runs(preset):
    """From the loss's declaration (its Params), each read where the loss reads it: an actor key
    (clip_ratio_c) from the actor, a setting the preset leaves out at its default. verl's own
    losses have no line."""
    from dataclasses import fields

    config = _compose(*PAPER_7B[:1], f"algorithm={preset}", changes={"actor_rollout_ref.actor.clip_ratio_c": 4.5})
    summary = {"n_gpus": 8, "dp": 8, "rollout_replicas": 8, "updates_per_step": 16, "rows": {}, "attention": [],
               "memory": [], "trackers": [], "warnings": []}  # fmt: skip
    lines = [line for line in pf.describe(config, summary, built={}).splitlines() if line.startswith(f"{preset} ")]
    spec = next((spec for spec in LOSSES if spec.name == preset), None)
    if spec is None:
        assert lines == []
        return
    (line,) = lines
    actor = config.actor_rollout_ref.actor
    for f in fields(spec.params):
        value = actor[f.name] if f.name in spec.actor_keys else actor.policy_loss.get(f.name, f.default)
        assert f" {f.name}={value}" in line, f.name
    assert ("clip_ratio_c=4.5" in line) == ("clip_ratio_c" in spec.actor_keys)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper_data")
    return fx.prepare_all(root / "sources", root / "prepared")


def _paper(data_dir, algorithm, changes=None):
    files = {"data.train_files": f"{data_dir}/dapo_math_17k.parquet", "data.val_files": [f"{data_dir}/aime24.parquet"]}
    config = _compose("recipe=paper_7b", f"algorithm={algorithm}", changes={**files, **(changes or {})})
    OmegaConf.resolve(config)
    return config


def test_preflight_refuses_sequence_parallelism_with_sdpa(data_dir):
    sp = {ATTENTION: "sdpa", "actor_rollout_ref.actor.ulysses_sequence_parallel_size": 2}
    config = _paper(data_dir, "grpo", sp)
    for check in (pf.preflight, pf.dry_run):
        with pytest.raises(ValueError, match="ulysses_sequence_parallel_size=2 with .*=sdpa is not allowed"):
            check(config)


def test_preflight_refuses_a_missing_package_and_the_dry_run_notes_it_without_cuda(data_dir, packages, monkeypatch):
    config = _paper(data_dir, "bapo")
    packages(missing={"flash_attn", "torch_npu"})
    with pytest.raises(ValueError, match="needs the flash_attn package"):
        pf.preflight(config)
    monkeypatch.setattr(pf.parallelism, "_cuda_visible", lambda: True)  # a dry run on a GPU node checks as the run does
    with pytest.raises(ValueError, match="needs the flash_attn package"):
        pf.preflight(config, dry_run=True)
    monkeypatch.setattr(pf.parallelism, "_cuda_visible", lambda: False)
    with pytest.warns(pf.PreflightWarning, match="loss_mode=bapo with actor_rollout_ref.actor.use_dynamic_bsz=True"):
        summary = pf.preflight(config, dry_run=True)
    text = pf.describe(config, summary, built={"actor": object()})
    assert "attention          actor: flash_attention_2 NOT INSTALLED HERE" in text
    assert "WARNING            actor_rollout_ref.actor.policy_loss.loss_mode=bapo" in text


def test_preflight_warns_on_the_driver_when_the_trust_region_cannot_act(data_dir, packages):
    packages(present={"flash_attn"}, missing={"torch_npu"})
    config = _paper(data_dir, "maspo", {"actor_rollout_ref.actor.ppo_mini_batch_size": 512})
    with pytest.warns(pf.PreflightWarning, match="the trust region cannot act"):
        summary = pf.preflight(config)
    assert summary["attention"] == ["actor: flash_attention_2 (flash_attn installed)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", pf.PreflightWarning)
        assert pf.preflight(_paper(data_dir, "maspo"))["warnings"] == []
