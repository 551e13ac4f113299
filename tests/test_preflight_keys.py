"""Settings verl would silently ignore (maspo_verl/preflight/keys.py), refused before Ray.

The tables preflight works from (maspo_verl/compat.py) are held to verl's own source here
(tests/verl_reads.py scans it): a verl release that adds, drops or stops reading a key fails
these tests. Every composition of a recipe, a preset and a kit (and the first-launch mode) must
pass the check: the refusal must not catch what this package itself sets.
"""

import functools
import re
from pathlib import Path

import pytest
import verl  # noqa: F401  (imports our plugin)
import verl_reads
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

from maspo_verl import compat
from maspo_verl.preflight.keys import SECTIONS, check_ignored_keys, config_class, ignored_keys, unread_fields

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PRESETS = sorted(path.stem for path in (CONFIGS / "algorithm").glob("*.yaml") if path.stem[0] != "_")
KITS = sorted(path.stem for path in (CONFIGS / "kit").glob("*.yaml"))
RECIPES = sorted(path.stem for path in (CONFIGS / "recipe").glob("paper_*.yaml"))
LAUNCHES = sorted(path.stem for path in (CONFIGS / "launch").glob("*.yaml"))
GENERATED = ("_generated_ppo_trainer.yaml", "_generated_ppo_megatron_trainer.yaml")


@functools.cache
def _composed(*overrides):
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        return compose("maspo_trainer", overrides=list(overrides))


def _compose(*overrides, changes=None):
    config = OmegaConf.create(OmegaConf.to_container(_composed(*overrides)))
    with open_dict(config):
        for key, value in (changes or {}).items():
            OmegaConf.update(config, key, value, force_add=True)
    return config


# ----------------------------------------------------------------------------- the tables against verl's source


def _verl_config_classes() -> dict:
    """Every config dataclass of the checked sections in verl's composed defaults (FSDP and Megatron)."""
    classes = {}
    for name in GENERATED:
        config = OmegaConf.load(verl_reads.ROOT / "trainer" / "config" / name)
        for section in SECTIONS:
            verl_reads.dataclasses_in(OmegaConf.select(config, section), classes)
    return classes


def test_the_unread_fields_are_the_ones_verls_source_reads_nowhere():
    classes = _verl_config_classes()
    assert {"FSDPActorConfig", "RolloutConfig", "FSDPOptimizerConfig", "FSDPEngineConfig"} <= set(classes)
    for name, cls in sorted(classes.items()):
        assert set(unread_fields(cls)) == verl_reads.unread_fields(cls), name
    declared = {base.__name__ for cls in classes.values() for base in cls.__mro__}
    assert set(compat.UNREAD_CONFIG_FIELDS) <= declared, "a class in compat.UNREAD_CONFIG_FIELDS is gone"


def test_grad_clip_is_read_nowhere_but_the_optimizers_alias_is():
    """The issue's case, by hand: FSDPEngine.optimizer_step clips with optim.clip_grad; the
    optimizer's deprecated grad_clip is copied into clip_grad, so it counts as read."""
    from verl.workers.config import FSDPActorConfig, FSDPOptimizerConfig

    assert unread_fields(FSDPActorConfig)["grad_clip"] == "optim.clip_grad"
    assert "grad_clip" not in verl_reads.unread_fields(FSDPOptimizerConfig)
    engine = (verl_reads.ROOT / "workers" / "engine" / "fsdp" / "transformer_impl.py").read_text()
    assert "self.optimizer_config.clip_grad" in engine and "grad_clip" not in engine


def test_the_trainer_keys_are_the_ones_the_v1_trainer_reads():
    reads = verl_reads.trainer_reads()
    defaults = compat.verl_default_config().trainer
    assert {key for key in defaults if key not in reads} == set(compat.UNREAD_TRAINER_KEYS)
    assert {key for key in reads if key not in defaults} == set(compat.TRAINER_KEYS_BEYOND_YAML)
    assert "trainer/ppo/v1/trainer_base.py" in reads["total_training_steps"]


def test_the_ref_keys_verls_engine_worker_renames():
    source = (verl_reads.ROOT / "workers" / "engine_workers.py").read_text()
    for old, new in compat.REF_RENAMED_KEYS.items():
        assert re.search(rf"self\.config\.ref\.{new} = self\.config\.ref\.pop\(\s*\"{old}\"", source), (old, new)


def test_the_default_config_verl_ships_is_its_composition():
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        stock = compose("ppo_trainer")
    shipped = compat.verl_default_config()
    for section in ("actor_rollout_ref", "trainer"):
        assert OmegaConf.to_container(stock[section]) == OmegaConf.to_container(shipped[section]), section


# ----------------------------------------------------------------------------- what is refused


PAPER = ("recipe=paper_7b", "algorithm=grpo")


@pytest.mark.parametrize(
    "changes,message",
    [
        (
            {"actor_rollout_ref.actor.grad_clip": 0.5},
            r"actor_rollout_ref\.actor\.grad_clip=0\.5: verl 0\.9\.1 reads actor_rollout_ref\.actor\.grad_clip "
            r"nowhere.*set actor_rollout_ref\.actor\.optim\.clip_grad instead",
        ),
        (
            {"actor_rollout_ref.actor.ppo_epoch": 2},
            r"actor_rollout_ref\.actor\.ppo_epoch=2: verl 0\.9\.1 has no such key.*did you mean "
            r"actor_rollout_ref\.actor\.ppo_epochs\?",
        ),
        ({"actor_rollout_ref.actor.fsdp_config.param_ofload": True}, r"did you mean .*fsdp_config\.param_offload\?"),
        ({"actor_rollout_ref.rollout.max_model_length": 4096}, r"did you mean .*rollout\.max_model_len\?"),
        ({"actor_rollout_ref.rollout.val_kwargs.temprature": 0.6}, r"did you mean .*val_kwargs\.temperature\?"),
        ({"actor_rollout_ref.rollout.over_sample_rate": 0.1}, r"rollout\.over_sample_rate nowhere.*no other key"),
        ({"actor_rollout_ref.ref.log_prob_max_token_len": 1}, r"did you mean .*ref\.log_prob_max_token_len_per_gpu\?"),
        ({"trainer.balance_batch": False}, r"trainer\.balance_batch nowhere.*balances every batch"),
        ({"trainer.total_steps": 10}, r"trainer\.total_steps=10: .*did you mean trainer\.total_epochs\?"),
        ({"trainer.v1.sampler.max_off_policy": 2}, r"trainer\.v1\.sampler\.max_off_policy=2: .*no such key"),
    ],
)
def test_an_ignored_setting_is_refused_naming_the_key_verl_reads(changes, message):
    config = _compose(*PAPER, changes=changes)
    with pytest.raises(ValueError, match=message):
        check_ignored_keys(config)


@pytest.mark.parametrize(
    "changes",
    [
        {"actor_rollout_ref.actor.grad_clip": 1.0},  # verl's own default: changes nothing, says nothing
        {"actor_rollout_ref.actor.optim.clip_grad": 0.5},
        {"actor_rollout_ref.actor.optim.grad_clip": 0.5},  # the optimizer's alias, which verl reads
        {"actor_rollout_ref.rollout.engine_kwargs.vllm.swap_space": 4},  # passed to vLLM whole
        {"actor_rollout_ref.model.override_config.rope_theta": 1.0},  # not a checked section
        {"trainer.wandb_proxy": "http://proxy:3128"},  # read by verl's tracker, not in its YAML
        {"trainer.v1.sampler.sampler_kwargs.anything": 1},
        {"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": 8},  # renamed by the engine worker
    ],
)
def test_settings_verl_reads_pass(changes):
    assert ignored_keys(_compose(*PAPER, changes=changes)) == []


def test_all_ignored_settings_are_listed_at_once():
    config = _compose(*PAPER, changes={"actor_rollout_ref.actor.grad_clip": 2.0, "trainer.foo": 1})
    with pytest.raises(ValueError, match=r"^2 setting\(s\) .*\n  - .*grad_clip.*\n  - trainer\.foo=1"):
        check_ignored_keys(config)


def test_the_recipes_use_the_key_verl_clips_with():
    config = _compose("recipe=paper_14b", "algorithm=maspo")
    assert "grad_clip" not in OmegaConf.load(CONFIGS / "recipe" / "_paper_base.yaml").actor_rollout_ref.actor
    assert config.actor_rollout_ref.actor.optim.clip_grad == 1.0


# ----------------------------------------------------------------------------- what this package sets


def _overlay(group: str, name: str):
    """A config file of ours as Hydra merges it: its `defaults` (same group, `_self_`) in order."""
    raw = OmegaConf.load(CONFIGS / group / f"{name}.yaml")
    order = list(raw.pop("defaults", ["_self_"]))
    if "_self_" not in order:
        order.append("_self_")
    parts = [raw if entry == "_self_" else _overlay(group, entry) for entry in order]
    return OmegaConf.merge(*parts)


@functools.cache
def _base():
    return OmegaConf.to_container(_composed("~algorithm"))


def _merged(recipe, preset, kit, launch=None):
    """recipe=R algorithm=P +kit=K [+launch=L] as Hydra composes it: verl's config, the recipe, the
    preset, then the appended groups, each merged over the last."""
    parts = [_overlay("recipe", recipe) if recipe else {}, _overlay("algorithm", preset)]
    parts += [_overlay("kit", kit) if kit else {}, _overlay("launch", launch) if launch else {}]
    return OmegaConf.merge(_base(), *parts)


def _overrides(recipe, preset, kit, launch=None):
    return tuple(
        item
        for item in (
            f"recipe={recipe}" if recipe else None,
            f"algorithm={preset}",
            f"+kit={kit}" if kit else None,
            f"+launch={launch}" if launch else None,
        )  # fmt: skip
        if item
    )


@pytest.mark.parametrize(
    "case",
    [
        ("paper_14b", "dapo", "recipe_cpu", None),
        (None, "bapo", "chain_cpu", None),
        ("paper_7b", "maspo", None, "first"),
    ],
)
def test_the_merged_compositions_are_hydras(case):
    assert OmegaConf.to_container(_merged(*case)) == OmegaConf.to_container(_composed(*_overrides(*case)))


def test_no_recipe_preset_kit_or_launch_sets_a_key_verl_ignores():
    assert LAUNCHES == ["first"] and len(PRESETS) > 10 and len(KITS) >= 5
    checked = 0
    for recipe in (None, *RECIPES):
        for kit in (None, *KITS):
            for preset in PRESETS:
                assert ignored_keys(_merged(recipe, preset, kit)) == [], (recipe, preset, kit)
                checked += 1
        for preset in PRESETS if recipe else ():
            assert ignored_keys(_merged(recipe, preset, None, "first")) == [], (recipe, preset, "first")
            checked += 1
    assert checked == len(PRESETS) * (4 * (len(KITS) + 1) + 3)


def test_our_policy_loss_classes_are_checked_as_dataclasses():
    """The presets' `_target_` is our subclass of verl's PolicyLossConfig: its own fields are known."""
    config = _compose("algorithm=maspo", changes={"actor_rollout_ref.actor.policy_loss.sigma_bse": 1.0})
    assert config_class(config.actor_rollout_ref.actor.policy_loss._target_).__name__ == "MASPOPolicyLossConfig"
    assert any("did you mean actor_rollout_ref.actor.policy_loss.sigma_base?" in line for line in ignored_keys(config))
