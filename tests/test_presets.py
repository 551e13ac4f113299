"""Every `algorithm=` preset against verl's real config and verl's own ppo_loss.

The expectations below are written from the papers (the authors' definitions
and defaults), not read back from the YAML files: a preset that drifts from its paper fails.
"""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from expected import BAPO_DEFAULTS, DAC_DEFAULTS
from expected import MASPO_DEFAULTS as MASPO_PAPER
from maspo_verl.algos import LOSSES
from maspo_verl.preflight import check_algorithm_config
from verl_batch import make_batch, run_ppo_loss
from verl_config import build_actor_config, compose_ours, compose_stock

ROOT = Path(__file__).parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "algorithm").glob("*.yaml") if not p.stem.startswith("_"))
OURS = {spec.name for spec in LOSSES}
ACTOR = "actor_rollout_ref.actor."
PL = ACTOR + "policy_loss."
# Long enough for DAPO's 4096-token overlong buffer (the recipes' lengths are longer still).
LENGTH = "data.max_response_length=8192"

# What each preset changes against `grpo`, as leaf keys of the composed config. Nothing else
# may differ: presets share _base.yaml and state only what differs.
CHANGES = {
    "grpo": {},
    "clip_higher": {ACTOR + "clip_ratio_high": 0.28},
    "dapo": {
        ACTOR + "clip_ratio_high": 0.28,
        ACTOR + "clip_ratio_c": 10.0,
        "algorithm.filter_groups.enable": True,
        "algorithm.filter_groups.metric": "acc",
        "reward.reward_manager.name": "dapo",
        "reward.reward_kwargs.max_resp_len": 8192,
        "reward.reward_kwargs.overlong_buffer_cfg.enable": True,
        "reward.reward_kwargs.overlong_buffer_cfg.len": 4096,
        "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": 1.0,
        "reward.reward_kwargs.overlong_buffer_cfg.log": True,
    },
    "sapo": {PL + "loss_mode": "sapo", ACTOR + "loss_agg_mode": "seq-mean-token-mean"},
    "gspo": {
        PL + "loss_mode": "gspo",
        ACTOR + "loss_agg_mode": "seq-mean-token-mean",
        ACTOR + "clip_ratio_low": 3e-4,
        ACTOR + "clip_ratio_high": 4e-4,
        ACTOR + "clip_ratio_c": 10.0,
    },
    "cispo": {PL + "loss_mode": "cispo", ACTOR + "clip_ratio_low": 10.0},  # high stays 0.2
    "dac": {
        PL + "_target_": "maspo_verl.config.DACPolicyLossConfig",
        PL + "loss_mode": "dac",
        **{PL + key: value for key, value in DAC_DEFAULTS.items() if key != "clip_ratio_c"},  # an actor key
    },
    "bapo": {
        PL + "_target_": "maspo_verl.config.BAPOPolicyLossConfig",
        PL + "loss_mode": "bapo",
        **{PL + key: value for key, value in BAPO_DEFAULTS.items() if key != "clip_ratio_c"},  # an actor key
    },
    "entropy_adv": {
        ACTOR + "calculate_entropy": True,
        PL + "advantage_shaper": "entropy_adv",
        PL + "advantage_shaper_kwargs.alpha": 0.4,
        PL + "advantage_shaper_kwargs.kappa": 2.0,
    },
}
MASPO = {PL + "_target_": "maspo_verl.config.MASPOPolicyLossConfig", PL + "loss_mode": "maspo", PL + "two_sided": False,
         PL + "dual_clip_c": 0.0}  # fmt: skip  # the dual clip: a variant of ours, off as the authors have it
MASPO.update({PL + key: value for key, value in MASPO_PAPER.items()})
CHANGES["maspo"] = MASPO
CHANGES["maspo_gate_only"] = {**MASPO, PL + "alpha": 0.0, PL + "beta_pos": 0.0, PL + "beta_neg": 0.0}
CHANGES["maspo_no_risk"] = {**MASPO, PL + "beta_pos": 0.0, PL + "beta_neg": 0.0}
CHANGES["maspo_no_mass"] = {**MASPO, PL + "alpha": 0.0}
CHANGES["maspo_two_sided"] = {**MASPO, PL + "two_sided": True}
# sapo's tau values are verl's defaults too (1.0 / 1.05): the preset states them, they do not differ
SAPO_TAUS = {"tau_pos": 1.0, "tau_neg": 1.05}


def leaves(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


def settings(config) -> dict:
    sections = {name: OmegaConf.to_container(config[name], resolve=True) for name in ("algorithm", "reward")}
    sections["actor_rollout_ref.actor"] = OmegaConf.to_container(config.actor_rollout_ref.actor, resolve=True)
    return {key: value for name, section in sections.items() for key, value in leaves(section, name + ".")}


def test_every_preset_is_expected_and_every_expected_preset_exists():
    assert sorted(CHANGES) == PRESETS


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_differs_from_grpo_in_exactly_what_its_paper_changes(preset):
    base = settings(compose_ours("algorithm=grpo", LENGTH))
    this = settings(compose_ours(f"algorithm={preset}", LENGTH))
    differences = {key: this.get(key) for key in set(base) | set(this) if base.get(key) != this.get(key)}
    assert differences == pytest.approx(CHANGES[preset])


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_keeps_grpo_advantages_and_no_kl_or_entropy_bonus(preset):
    config = compose_ours(f"algorithm={preset}", LENGTH)
    actor = config.actor_rollout_ref.actor
    assert config.algorithm.adv_estimator == "grpo" and config.algorithm.norm_adv_by_std_in_grpo
    assert not config.algorithm.use_kl_in_reward and not actor.use_kl_loss
    assert actor.entropy_coeff == 0
    if preset == "sapo":
        assert {key: actor[key] for key in SAPO_TAUS} == SAPO_TAUS


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("compose", [compose_ours, compose_stock], ids=["maspo_verl.main_ppo", "verl.main_ppo"])
def test_preset_composes_both_ways_and_builds_verls_actor_config(preset, compose):
    choice = f"algorithm={preset}" if compose is compose_ours else f"+algorithm={preset}"
    config = compose(choice, LENGTH)
    check_algorithm_config(config)
    actor = build_actor_config(config)
    loss_mode = CHANGES[preset].get(PL + "loss_mode", "vanilla")
    assert actor.policy_loss.loss_mode == loss_mode
    if loss_mode in OURS:
        for key, value in CHANGES[preset].items():
            name = key.removeprefix(PL)
            if name != key and not name.startswith("_"):
                assert actor.policy_loss[name] == pytest.approx(value), name


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_through_verls_ppo_loss(preset):
    config = build_actor_config(compose_ours(f"algorithm={preset}", LENGTH))
    data, log_prob = make_batch(seed=11, scale=0.5, padding=0.0)
    loss, metrics = run_ppo_loss(config, data, log_prob, micro_batch_size=6)
    mask = data["response_mask"].bool()
    assert torch.isfinite(torch.tensor(loss))
    assert torch.isfinite(log_prob.grad).all() and (log_prob.grad[~mask] == 0).all()
    assert log_prob.grad.abs().sum() > 0
    names = set(metrics[0])
    loss_mode = config.policy_loss.loss_mode
    if loss_mode in OURS:
        assert any(name.startswith(f"actor/{loss_mode}/") for name in names), names
    assert "actor/ppo_kl" in names


# BAPO picks its bounds per loss call, i.e. per micro-batch: see test_bapo_bounds_follow_each_micro_batch.
INVARIANT = [p for p in PRESETS if CHANGES.get(p, {}).get(PL + "loss_mode") != "bapo"]


@pytest.mark.parametrize("preset", INVARIANT)
@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_add_up_to_the_mini_batch(preset, loss_agg_mode):
    config = build_actor_config(compose_ours(f"algorithm={preset}", LENGTH, f"{ACTOR}loss_agg_mode={loss_agg_mode}"))
    data, log_prob = make_batch(seed=12, scale=0.5, padding=0.0)
    whole, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=6)
    whole_grad = log_prob.grad.clone()
    log_prob.grad = None
    split, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=2)
    assert split == pytest.approx(whole, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(log_prob.grad, whole_grad, rtol=1e-5, atol=1e-7)


def test_readme_table_lists_every_preset():
    readme = (ROOT / "README.md").read_text()
    for preset in PRESETS:
        assert f"| `{preset}` |" in readme, preset
