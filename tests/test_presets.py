"""Every `algorithm=` preset against verl's real config and verl's own ppo_loss.

The expectations below are written from the papers (the authors' definitions
and defaults), not read back from the YAML files: a preset that drifts from its paper fails.
"""

import functools
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
    # DPPO (2602.04879): the divergence threshold delta in clip_ratio_low/high (TV 0.15, binary KL
    # 0.05), the truncation of the detached ratio in clip_ratio_c, off (the authors' verl example)
    "dppo_tv": {
        PL + "loss_mode": "dppo_tv",
        ACTOR + "clip_ratio_low": 0.15,
        ACTOR + "clip_ratio_high": 0.15,
        ACTOR + "clip_ratio_c": 10000.0,
    },
    "dppo_kl": {
        PL + "loss_mode": "dppo_kl",
        ACTOR + "clip_ratio_low": 0.05,
        ACTOR + "clip_ratio_high": 0.05,
        ACTOR + "clip_ratio_c": 10000.0,
    },
    # GMPO (2507.20673, Sec. 4): log-space clip (e^-0.4, e^0.4)
    "geo_mean": {PL + "loss_mode": "geo_mean", ACTOR + "clip_ratio_low": 0.4, ACTOR + "clip_ratio_high": 0.4},
    # Clip-Cov / KL-Cov (2505.22617, the authors' 7B scripts): PPO's clip widened to 1 for Clip-Cov
    # (its ratio 2e-4 and bounds (1, 5) are verl's defaults); KL-Cov's k 2e-3 and coefficient 1
    "clip_cov": {PL + "loss_mode": "clip_cov", ACTOR + "clip_ratio_low": 1.0, ACTOR + "clip_ratio_high": 1.0},
    "kl_cov": {PL + "loss_mode": "kl_cov", PL + "kl_cov_ratio": 0.002, PL + "ppo_kl_coef": 1.0},
    # GPG (2504.02546): its own advantages and the plain policy gradient
    "gpg": {PL + "loss_mode": "gpg", "algorithm.adv_estimator": "gpg"},
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
    """gpg excepted: GPG's advantages are its own (CHANGES)."""
    config = compose_ours(f"algorithm={preset}", LENGTH)
    actor = config.actor_rollout_ref.actor
    assert config.algorithm.adv_estimator == CHANGES[preset].get("algorithm.adv_estimator", "grpo")
    assert config.algorithm.norm_adv_by_std_in_grpo
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
    assert "actor/pg_loss" in names
    if loss_mode != "gpg":  # verl's gpg returns no metrics of its own
        assert "actor/ppo_kl" in names


def spy_on_registry(monkeypatch) -> list:
    """Wrap every loss in verl's policy-loss registry; returns the list of (name, config) calls."""
    from verl.trainer.ppo import core_algos

    calls = []

    def spy(name, loss_fn):
        def recorded(*args, **kwargs):
            calls.append((name, kwargs["config"]))
            return loss_fn(*args, **kwargs)

        return recorded

    for name, loss_fn in list(core_algos.POLICY_LOSS_REGISTRY.items()):
        monkeypatch.setitem(core_algos.POLICY_LOSS_REGISTRY, name, spy(name, loss_fn))
    return calls


@pytest.mark.parametrize("preset", PRESETS)
def test_verl_calls_the_loss_the_preset_names_with_its_settings(preset, monkeypatch):
    """Inside verl's ppo_loss (the actor's loss), the registry entry called on every micro-batch is
    the preset's loss, and no other; the settings it receives are the paper's (CHANGES)."""
    calls = spy_on_registry(monkeypatch)
    config = build_actor_config(compose_ours(f"algorithm={preset}", LENGTH))
    data, log_prob = make_batch(seed=13, scale=0.5, padding=0.0)
    run_ppo_loss(config, data, log_prob, micro_batch_size=3)
    expected = CHANGES[preset].get(PL + "loss_mode", "vanilla")
    assert [name for name, _ in calls] == [expected, expected]
    received = calls[0][1]
    for key, value in CHANGES[preset].items():
        if key.startswith(ACTOR) and not key.removeprefix(PL).startswith("_") and "advantage_shaper" not in key:
            assert functools.reduce(getattr, key.removeprefix(ACTOR).split("."), received) == pytest.approx(value), key


# BAPO picks its bounds per loss call, i.e. per micro-batch: see test_bapo_bounds_follow_each_micro_batch.
# clip_cov and kl_cov choose their share of tokens per loss call too, and geo_mean averages over each
# micro-batch's responses (both: see test_verl_losses_that_depend_on_the_micro_batch).
PER_MICRO_BATCH = {"bapo", "clip_cov", "kl_cov", "geo_mean"}
INVARIANT = [p for p in PRESETS if CHANGES.get(p, {}).get(PL + "loss_mode") not in PER_MICRO_BATCH]


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


def test_verl_losses_that_depend_on_the_micro_batch():
    """Two of verl 0.9.1's losses are not sums over the mini-batch (docs/algorithms.md says so):
    geo_mean averages over each micro-batch's responses and ignores the global batch size, so the
    engine's sum over k equal micro-batches is k times the whole mini-batch's loss and gradient;
    kl_cov picks its top kl_cov_ratio share of tokens (at least one) in each micro-batch, so a split
    mini-batch penalises other tokens than the whole one."""
    data, log_prob = make_batch(seed=12, scale=0.5, padding=0.0)
    config = build_actor_config(compose_ours("algorithm=geo_mean", LENGTH))
    whole, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=6)
    whole_grad = log_prob.grad.clone()
    log_prob.grad = None
    split, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=2)
    assert split == pytest.approx(3 * whole, rel=1e-5)
    torch.testing.assert_close(log_prob.grad, 3 * whole_grad)

    config = build_actor_config(compose_ours("algorithm=kl_cov", LENGTH))
    log_prob.grad = None
    whole, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=6)
    split, _ = run_ppo_loss(config, data, log_prob, micro_batch_size=2)
    assert abs(split - whole) > 1e-3


def test_readme_table_lists_every_preset():
    readme = (ROOT / "README.md").read_text()
    for preset in PRESETS:
        assert f"| `{preset}` |" in readme, preset
