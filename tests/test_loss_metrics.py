"""The loss-side figures every policy loss logs (maspo_verl/loss_metrics.py, measured in the hook
around verl's ppo_loss), against closed forms written here from each loss's formula:

removed_t = 1 - (the loss's gradient on token t) / (-A rho's), so per loss
    hard clip (verl's vanilla, its dual clip, DAC, BAPO)  1 where clipped, else 0
    SAPO                                                  1 - f'(r),  f(r) = sigmoid(tau (r - 1)) 4 / tau
    MASPO                                                 1 - g  (1 where its dual clip cuts)
    CISPO                                                 1 - clip(r, 1 - low, 1 + high) / r
    GSPO                                                  1 - s / r, or 1 where clipped (s: the sequence's ratio)
    GPG (-A log pi)                                       1 - 1 / r
    DPPO-TV                                               1 - mask * min(r, c) / r
    GMPO (geo_mean)                                       1 - R 1[unclipped] / r  (R: its sequence ratio)
and the ratio quantiles per quadrant against numpy.quantile.
"""

import math

import numpy as np
import pytest
import torch

from maspo_verl import compat, loss_metrics
from maspo_verl.hook import hooked_ppo_loss, measured_lookup
from test_maspo_math import np_reference
from verl_batch import make_batch, run_ppo_loss
from verl_config import build_actor_config, compose_ours

PL = "actor_rollout_ref.actor.policy_loss."
A = "actor_rollout_ref.actor."


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def hard_clip(low, high, c):
    def removed(r, adv, old, **_):
        return ((adv > 0) & (r > 1 + high)) | ((adv < 0) & (r < 1 - low)) | ((adv < 0) & (r > c))

    return removed


def sapo(r, adv, tau_pos=1.0, tau_neg=1.05, **_):
    tau = np.where(adv > 0, tau_pos, tau_neg)
    s = sigmoid(tau * (r - 1))
    return 1 - 4 * s * (1 - s)  # f'(r) = 4 s (1 - s)


def maspo(params):
    def removed(r, adv, old, mask, **_):
        ref = np_reference(np.log(r) + old, old, adv, mask, params)
        return np.where(ref["dual_clipped"], 1.0, 1 - ref["gate"])

    return removed


def cispo(low, high):
    return lambda r, **_: 1 - np.clip(r, 1 - low, 1 + high) / r


def sequence_ratio(r, mask, log_ratio=None):
    log_ratio = np.where(mask, np.log(r) if log_ratio is None else log_ratio, 0.0)
    return np.exp(log_ratio.sum(1, keepdims=True) / np.maximum(mask.sum(1, keepdims=True), 1))


def gspo(low, high):
    def removed(r, adv, mask, **_):
        s = sequence_ratio(r, mask) * np.ones_like(r)
        clipped = -adv * np.clip(s, 1 - low, 1 + high) > -adv * s
        return np.where(clipped, 1.0, 1 - s / r)

    return removed


def dac(eps_low, eps_high, c):
    def removed(r, adv, old, **_):
        q = np.exp(old)
        r_low = 0.5 + 0.5 * np.sqrt(np.maximum(1 - 4 * eps_low / q, 0))
        r_high = np.minimum(0.5 + 0.5 * np.sqrt(1 + 4 * eps_high / q), max(c, 10))
        return ((adv > 0) & (r > r_high)) | ((adv < 0) & (r < r_low)) | ((adv < 0) & (r > c))

    return removed


def bapo(r, adv, metrics, **_):
    """BAPO's bounds are chosen per call: the ones it logged, then a hard clip at them."""
    low, high = metrics["actor/bapo/c_low"].aggregate(), metrics["actor/bapo/c_high"].aggregate()
    return ((adv > 0) & (r > high)) | ((adv < 0) & (r < low)) | ((adv < 0) & (r > 3.0))


def dppo_tv(r, adv, old, **_):
    prob, old_prob = r * np.exp(old), np.exp(old)
    inside = np.where(adv > 0, prob - old_prob <= 0.2, prob - old_prob >= -0.2)  # verl's clip_ratio 0.2
    return 1 - inside * np.minimum(r, 3.0) / r  # clip_ratio_c 3 (_base.yaml)


def geo_mean(r, adv, mask, **_):
    log_r = np.log(r)
    clipped_log = np.sign(adv) * np.minimum(np.sign(adv) * log_r, np.sign(adv) * np.clip(log_r, -0.2, 0.2))
    seq = sequence_ratio(r, mask, clipped_log)
    inside = np.clip(log_r, -0.2, 0.2) == log_r
    return 1 - seq * (inside | (np.sign(adv) * log_r < np.sign(adv) * np.clip(log_r, -0.2, 0.2))) / r


MASPO_DEFAULTS = dict(sigma_base=1.0, alpha=0.3, beta_pos=0.03, beta_neg=0.03, sigma_high=10.0, adv_low=0.1,
                      adv_high=10.0)  # fmt: skip
CASES = {
    "grpo": (["algorithm=grpo"], hard_clip(0.2, 0.2, 3.0)),
    "dapo": (["algorithm=dapo"], hard_clip(0.2, 0.28, 10.0)),
    "sapo": (["algorithm=sapo"], sapo),
    "sapo_token_mean": (["algorithm=sapo", A + "loss_agg_mode=token-mean"], sapo),  # verl's sapo ignores it
    "gspo": (["algorithm=gspo", A + "clip_ratio_low=0.05", A + "clip_ratio_high=0.05"], gspo(0.05, 0.05)),
    "cispo": (["algorithm=cispo"], cispo(10.0, 0.2)),
    "cispo_low": (["algorithm=cispo", A + "clip_ratio_low=0.3"], cispo(0.3, 0.2)),
    "dac": (["algorithm=dac"], dac(0.16, 0.2, 3.0)),
    "bapo": (["algorithm=bapo"], bapo),
    "maspo": (["algorithm=maspo"], maspo(MASPO_DEFAULTS)),
    "maspo_narrow_dual": (
        ["algorithm=maspo", PL + "sigma_base=0.2", PL + "dual_clip_c=1.5"],
        maspo(dict(MASPO_DEFAULTS, sigma_base=0.2, dual_clip_c=1.5)),
    ),  # fmt: skip
    "maspo_two_sided": (["algorithm=maspo_two_sided"], maspo(dict(MASPO_DEFAULTS, two_sided=True))),
    "gpg": (["algorithm=grpo", PL + "loss_mode=gpg"], lambda r, **_: 1 - 1 / r),
    "dppo_tv": (["algorithm=grpo", PL + "loss_mode=dppo_tv"], dppo_tv),
    "geo_mean": (["algorithm=grpo", PL + "loss_mode=geo_mean"], geo_mean),
}


def one_call(overrides, seed=5, scale=0.5):
    """One hooked ppo_loss call over a whole batch (one micro-batch): its metrics and the inputs."""
    config = build_actor_config(compose_ours(*overrides))
    data, log_prob = make_batch(bsz=24, resp_len=12, seed=seed, scale=scale, padding=0.0)
    _, metrics = run_ppo_loss(config, data, log_prob, micro_batch_size=24)
    mask = data["response_mask"].bool().numpy()
    old = data["old_log_probs"].numpy().astype(np.float64)
    lp = log_prob.detach().numpy().astype(np.float64)
    adv = data["advantages"].numpy().astype(np.float64)
    return metrics[0], dict(r=np.where(mask, np.exp(lp - old), 1.0), adv=adv, old=old, mask=mask), log_prob.grad


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_removed_weight_of_every_loss_matches_its_closed_form(case):
    overrides, closed_form = CASES[case]
    metrics, inputs, _ = one_call(overrides)
    mask, adv = inputs["mask"], inputs["adv"]
    removed = np.asarray(closed_form(**inputs, metrics=metrics), dtype=np.float64)
    counted = mask & (adv != 0)
    expected = removed[counted].mean()
    assert metrics["actor/pg_weight/removed"].aggregate() == pytest.approx(expected, abs=2e-5)


def test_the_closed_forms_are_not_all_alike():
    """The test above can tell the losses apart: their removed weights differ on this batch."""
    values = {case: round(one_call(CASES[case][0])[0]["actor/pg_weight/removed"].aggregate(), 3)
              for case in ("grpo", "sapo", "maspo", "cispo", "gspo")}  # fmt: skip
    assert len(set(values.values())) == len(values), values
    assert values["grpo"] > 0 and values["maspo"] > 0 and values["cispo"] != 0


def test_with_one_update_on_policy_nothing_is_removed():
    """r = 1 on every token: every loss passes -A rho's gradient (SAPO's f'(1) = 1, MASPO's g(1) = 1)."""
    for case in ("grpo", "sapo", "maspo", "cispo", "gspo"):
        metrics, _, _ = one_call(CASES[case][0], scale=0.0)
        assert metrics["actor/pg_weight/removed"].aggregate() == pytest.approx(0.0, abs=1e-6), case


@pytest.mark.parametrize("case", ["grpo", "sapo", "gspo"])
def test_the_negative_tokens_above_one_carry_their_share_of_the_actual_gradient(case):
    """|dL/d log_prob| per token from the gradient verl's backward left on the log-probs (not the
    probe's): the share of A < 0, r > 1 tokens. SAPO and GSPO aggregate seq-mean-token-mean."""
    metrics, inputs, grad = one_call(CASES[case][0])
    r, adv, mask = inputs["r"], inputs["adv"], inputs["mask"]
    magnitude = np.abs(grad.numpy().astype(np.float64)) * mask
    expected = magnitude[(adv < 0) & (r > 1) & mask].sum() / magnitude.sum()
    assert 0.05 < expected < 0.95
    assert metrics["actor/pg_weight/neg_above_share"].aggregate() == pytest.approx(expected, rel=1e-5)


def test_the_ratio_quantiles_per_quadrant_match_numpy():
    metrics, inputs, _ = one_call(CASES["maspo"][0])
    r, adv, mask = inputs["r"], inputs["adv"], inputs["mask"]
    quadrants = {"pos_above": (adv > 0) & (r > 1), "pos_below": (adv > 0) & (r <= 1),
                 "neg_above": (adv < 0) & (r > 1), "neg_below": (adv < 0) & (r <= 1)}  # fmt: skip
    for quadrant, members in quadrants.items():
        values = r[members & mask]
        assert len(values) >= 5, quadrant
        prefix = f"actor/ratio/{quadrant}/"
        assert metrics[prefix + "share"].aggregate() == pytest.approx(len(values) / mask.sum())
        for name, q in (("q10", 0.1), ("q50", 0.5), ("q90", 0.9)):
            assert metrics[prefix + name].aggregate() == pytest.approx(np.quantile(values, q), rel=1e-5)
        extreme = "max" if quadrant.endswith("above") else "min"
        assert metrics[prefix + extreme].aggregation.value == extreme
        assert metrics[prefix + extreme].aggregate() == pytest.approx(getattr(np, extreme)(values), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_grouped_quantiles_interpolate_like_numpy_and_an_empty_group_reads_one(seed):
    rng = np.random.default_rng(seed)
    values = torch.tensor(rng.lognormal(0, 0.5, 200), dtype=torch.float32)
    values[:20] = 1.0  # ties
    groups = torch.tensor(rng.choice([0, 1, 3, 5], 200, p=[0.5, 0.3, 0.1, 0.1]))  # no 2; 5: no group at all
    groups[rng.integers(200)] = 4  # a group of one
    probabilities = [0.0, 0.1, 0.5, 0.9, 1.0]
    got, counts = loss_metrics.grouped_quantiles(values, groups, 5, probabilities)
    for group in range(5):
        members = values.numpy()[groups.numpy() == group]
        assert counts[group] == len(members)
        if len(members) == 0:
            assert torch.equal(got[group], torch.ones(5))
        else:
            np.testing.assert_allclose(got[group].numpy(), np.quantile(members, probabilities), rtol=1e-6)


def test_an_empty_last_group_reads_one_when_every_value_is_in_a_group():
    values = torch.tensor([0.5, 2.0, 1.5])
    got, counts = loss_metrics.grouped_quantiles(values, torch.tensor([0, 0, 1]), 3, [0.5, 1.0])
    assert counts.tolist() == [2, 1, 0]
    np.testing.assert_allclose(got.numpy(), [[1.25, 2.0], [1.5, 1.5], [1.0, 1.0]])


def test_the_aggregation_weights_are_verls_per_token_weights():
    """token-mean: 1/tokens (dp_size over the global tokens); seq-mean-token-mean: 1/(sequences x
    length); sapo: seq-mean-token-mean whatever the actor says; geo_mean: without global sizes."""
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    info = {"dp_size": 2, "batch_num_tokens": 10, "global_batch_size": 8, "loss_scale_factor": None}
    token = compat.aggregation_weights("vanilla", "token-mean", mask, info)
    np.testing.assert_allclose(token.numpy(), mask.numpy() * 2 / 10)
    per_sequence = np.array([[1 / 3] * 3 + [0], [1, 0, 0, 0]]) * 2 / 8
    sapo_weights = compat.aggregation_weights("sapo", "token-mean", mask, info)
    np.testing.assert_allclose(sapo_weights.numpy(), per_sequence, rtol=1e-6)
    geo = compat.aggregation_weights("geo_mean", "token-mean", mask, info)
    np.testing.assert_allclose(geo.numpy(), np.array([[1 / 3] * 3 + [0], [1, 0, 0, 0]]) / 2, rtol=1e-6)


def test_the_instrument_changes_neither_loss_nor_gradient():
    """The hooked call (measured) against verl's own ppo_loss without the hook (not measured)."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils import losses

    from verl_batch import flat_model_output

    for case in ("grpo", "sapo", "gspo"):
        config = build_actor_config(compose_ours(*CASES[case][0]))
        data, log_prob = make_batch(bsz=8, seed=9, padding=0.0)
        hooked, metrics = run_ppo_loss(config, data, log_prob, micro_batch_size=8)
        assert "actor/pg_weight/removed" in metrics[0]
        grad = log_prob.grad.clone()
        log_prob.grad = None
        micro = data.clone()
        tu.assign_non_tensor(micro, dp_size=1, batch_num_tokens=int(data["response_mask"].sum()), global_batch_size=8)
        loss, plain = losses.ppo_loss._maspo_verl_wrapped(config, flat_model_output(micro, log_prob), micro)
        loss.backward()
        assert "actor/pg_weight/removed" not in plain  # outside the hook, verl's loss as it is
        assert hooked == loss.item() and torch.equal(grad, log_prob.grad), case


def test_the_figures_survive_a_micro_batch_without_advantage():
    config = build_actor_config(compose_ours("algorithm=grpo"))
    data, log_prob = make_batch(bsz=4, seed=3, padding=0.0)
    data["advantages"] = torch.zeros_like(data["advantages"])
    _, metrics = run_ppo_loss(config, data, log_prob, micro_batch_size=4)
    values = {name: metric.aggregate() for name, metric in metrics[0].items() if name.startswith("actor/")}
    assert all(math.isfinite(value) for value in values.values())
    assert values["actor/pg_weight/removed"] == 0.0 and values["actor/pg_weight/neg_above_share"] == 0.0
    assert values["actor/ratio/neg_above/q50"] == 1.0 and values["actor/ratio/neg_above/share"] == 0.0


def test_a_verl_that_stopped_binding_the_policy_loss_lookup_fails_the_install(monkeypatch):
    from verl.workers.utils import losses

    monkeypatch.setattr(losses, compat.POLICY_LOSS_LOOKUP, lambda name: None)
    with pytest.raises(RuntimeError, match="no longer binds verl's core_algos.get_policy_loss_fn by name"):
        compat.install_ppo_loss_hook(hooked_ppo_loss, measured_lookup)


# What waits for the device on a GPU: reading a value (item), boolean indexing and nonzero (their
# size), bincount (its maximum), unique, and a tensor built from host numbers (a copy to the device).
SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "lift_fresh")


def test_the_figures_are_computed_without_a_host_sync_until_the_one_that_reads_them():
    """The ops gradient_figures and the aggregation weights dispatch, recorded on the CPU: none of
    them waits for the device (measure() then reads all 22 figures with one tolist)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            indices = args[1] if func is torch.ops.aten.index.Tensor else []
            boolean = any(index is not None and index.dtype == torch.bool for index in indices)
            self.ops.append("bool index" if boolean else str(func))
            return func(*args, **(kwargs or {}))

    data, log_prob = make_batch(bsz=8, resp_len=12, seed=2, padding=0.0)
    mask = data["response_mask"].bool()
    inputs = dict(log_prob=log_prob.detach(), old_log_prob=data["old_log_probs"], advantages=data["advantages"],
                  response_mask=mask, rollout_is_weights=None)  # fmt: skip
    info = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": 8, "loss_scale_factor": None}
    with Recorder() as recorder:
        weights = compat.aggregation_weights("sapo", "token-mean", mask, info)
        loss_metrics.gradient_figures(torch.randn(mask.shape), weights, **inputs)
    assert len(recorder.ops) > 50  # the recorder sees the work
    assert not [op for op in recorder.ops if op == "bool index" or any(name in op for name in SYNCING)]
