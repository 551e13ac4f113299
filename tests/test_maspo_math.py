"""MASPO math against an independent NumPy (float64) reference.

The reference functions in this file are written from the paper's formulas (arXiv 2602.17550,
as docs/algorithms.md restates them), not from maspo_verl/algos/maspo.py:

    q        = exp(old_log_prob)
    rho      = exp(clamp(log_prob - old_log_prob, -20, 20))
    m        = clamp(sigma_base / q**alpha, sigma_base, sigma_high)
    sigma_p  = m * clamp(1 + beta_pos * A, adv_low, adv_high)            (A > 0)
    sigma_n  = m * clamp(1 / (1 - beta_neg * A), adv_low, adv_high)      (A < 0)
    g        = exp(-(rho - 1)**2 / (2 sigma**2))  if (A > 0, rho > 1) or (A < 0, rho < 1), else 1
    loss     = -A * sg(g) * rho,   d loss / d log_prob = -A * g * rho   (inside the clamp)
    dual clip (dual_clip_c = c > 1, off at 0): where A < 0 and g * rho > c, loss = -A * c and
               its gradient is 0

The code under test computes in float32, so comparisons use tolerances derived from float32
rounding; inputs are rounded to float32 first and the reference reads those rounded values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from expected import MASPO_DEFAULTS as DOC_DEFAULTS
from loss_reference import LossReference
from maspo_verl.algos.maspo import (
    LOSS,
    MASPOParams,
    maspo_diagnostics,
    maspo_token_loss,
    mass_adaptive_sigma,
    risk_factor,
)
from numeric import assert_grad_matches as assert_close_grad
from numeric import assert_masked_grad_matches, np_, np_inputs

F32_TINY = float(np.finfo(np.float32).tiny)
SHAPES = [(1, 1), (3, 7), (8, 33), (16, 128), (2, 1), (1, 50)]
NOISE_SCALES = [0.05, 0.5, 3.0]
SEEDS = list(range(30))


# --------------------------------------------------------------------------------------
# Independent NumPy reference (float64), from the paper (arXiv 2602.17550, docs/algorithms.md)
# --------------------------------------------------------------------------------------
def np_reference(log_prob, old_log_prob, adv, mask, p: dict) -> dict:
    """Every per-token quantity of MASPO, in float64. Masked positions are treated as padding."""
    mask, _, old, A, raw_log_ratio, rho = np_inputs(log_prob, old_log_prob, adv, mask)
    log_ratio = np.clip(raw_log_ratio, -20.0, 20.0)

    # Mass-adaptive limiter, straight from the formula sigma_base / q^alpha.
    q = np.exp(old)
    with np.errstate(divide="ignore", over="ignore"):
        m = np.clip(p["sigma_base"] / q ** p["alpha"], p["sigma_base"], p["sigma_high"])

    pos, neg = A > 0, A < 0
    risk_pos = np.where(pos, np.clip(1.0 + p["beta_pos"] * A, p["adv_low"], p["adv_high"]), np.nan)
    denom = np.where(neg, 1.0 - p["beta_neg"] * A, 1.0)  # only evaluated where A < 0
    risk_neg = np.where(neg, np.clip(1.0 / denom, p["adv_low"], p["adv_high"]), np.nan)
    sigma_pos = m * risk_pos  # NaN where A <= 0: undefined there
    sigma_neg = m * risk_neg  # NaN where A >= 0

    agg_pos = pos & (rho > 1)
    agg_neg = neg & (rho < 1)
    if p.get("two_sided"):  # the ablation: every quadrant that moved
        agg_pos, agg_neg = pos & (log_ratio != 0), neg & (log_ratio != 0)
    agg = agg_pos | agg_neg
    sigma = np.where(agg_pos, sigma_pos, np.where(agg_neg, sigma_neg, 1.0))
    gate = np.where(agg, np.exp(-((rho - 1.0) ** 2) / (2.0 * sigma**2)), 1.0)

    c = p.get("dual_clip_c", 0.0)
    dual_clipped = neg & (gate * rho > c) if c else np.zeros_like(mask)
    loss = np.where(mask, np.where(dual_clipped, -A * c, -A * gate * rho), 0.0)
    inside = mask & (np.abs(raw_log_ratio) < 20.0)  # clamp passes the gradient inside its bounds
    grad = np.where(inside & ~dual_clipped, -A * gate * rho, 0.0)
    # The other algorithm: differentiate through g as well. dg/dr = -g (r - 1) / sigma^2 and
    # d rho / d log_prob = rho, so d(g rho)/d log_prob = rho * (g + rho * dg/dr).
    dg_dr = np.where(agg, -gate * (rho - 1.0) / sigma**2, 0.0)
    grad_through_gate = np.where(inside, -A * rho * (gate + rho * dg_dr), 0.0)
    return dict(
        mask=mask,
        A=A,
        raw_log_ratio=raw_log_ratio,
        log_ratio=log_ratio,
        rho=rho,
        m=m,
        sigma_pos=sigma_pos,
        sigma_neg=sigma_neg,
        sigma=sigma,
        agg_pos=agg_pos,
        agg_neg=agg_neg,
        gate=gate,
        dual_clipped=dual_clipped,
        loss=loss,
        grad=grad,
        grad_through_gate=grad_through_gate,
    )


def np_token_mean(loss, mask) -> float:
    mask = np.asarray(mask, bool)
    return float(np.where(mask, loss, 0.0).sum() / max(int(mask.sum()), 1))


def np_diagnostics(ref: dict, adv, mask) -> dict:
    """Per-batch metrics from maspo.md's list of diagnostics, in NumPy."""
    mask = np.asarray(mask, bool)
    A = np.where(mask, np.asarray(adv, np.float64), 0.0)
    rho, gate = ref["rho"], ref["gate"]
    n = int(mask.sum())

    def frac(b):
        return float((b & mask).sum() / n) if n else 0.0

    gated = (ref["agg_pos"] | ref["agg_neg"]) & mask
    return {
        "gate_mean": float(gate[gated].mean()) if gated.any() else 1.0,
        "gated_frac_pos": frac(ref["agg_pos"]),
        "gated_frac_neg": frac(ref["agg_neg"]),
        "gate_below_half_frac": frac(gate < 0.5),
        "sigma_pos_mean": float(ref["sigma_pos"][mask & (A > 0)].mean()) if (mask & (A > 0)).any() else None,
        "sigma_neg_mean": float(ref["sigma_neg"][mask & (A < 0)].mean()) if (mask & (A < 0)).any() else None,
        "clip_frac_ppo": frac(((A > 0) & (rho > 1.2)) | ((A < 0) & (rho < 0.8))),
        "dual_clip_frac": frac(ref["dual_clipped"]),
    }


def gate_bracket(ref: dict, rel_r=None, rel_sigma=2e-6):
    """[lo, hi] that a float32 evaluation of the gate must lie in.

    In float32 rho carries a relative error of a few ulps times (1 + |log ratio|) and sigma a
    few ulps times (1 + |log m|); the gate is monotone in |rho - 1| and in sigma, so evaluating
    the exact formula at the perturbed corners brackets any faithful float32 evaluation.
    The code under test floors the gate at float32's smallest normal (it must never be 0).
    """
    rho, sigma, agg = ref["rho"], ref["sigma"], ref["agg_pos"] | ref["agg_neg"]
    if rel_r is None:
        rel_r = 4e-7 * (1.0 + np.abs(ref["log_ratio"]))
    d = np.abs(rho - 1.0)
    d_lo = np.maximum(d - rel_r * rho - 1.2e-7, 0.0)
    d_hi = d + rel_r * rho + 1.2e-7
    rel_s = rel_sigma * (1.0 + np.abs(np.log(np.where(agg, sigma, 1.0))))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        z_lo = d_lo**2 / (2.0 * (sigma * (1 + rel_s)) ** 2) * (1 - 1e-6)
        z_hi = d_hi**2 / (2.0 * (sigma * (1 - rel_s)) ** 2) * (1 + 1e-6)
    g_hi = np.where(agg, np.exp(-z_lo) * (1 + 1e-6), 1.0)
    g_lo = np.where(agg, np.exp(-z_hi) * (1 - 1e-6), 1.0)
    g_lo = np.maximum(g_lo, 0.0)
    return np.minimum(g_lo, 1.0), np.minimum(np.maximum(g_hi, F32_TINY), 1.0)


# --------------------------------------------------------------------------------------
# Input generation
# --------------------------------------------------------------------------------------
def random_params(rng) -> dict:
    if rng.random() < 0.15:
        return dict(DOC_DEFAULTS)
    sigma_base = float(10 ** rng.uniform(-1.5, 0.7))
    return dict(
        dual_clip_c=0.0 if rng.random() < 0.5 else float(rng.choice([1.05, 1.5, 3.0])),
        sigma_base=sigma_base,
        alpha=0.0 if rng.random() < 0.15 else float(rng.uniform(0.0, 1.0)),
        beta_pos=0.0 if rng.random() < 0.15 else float(rng.uniform(0.0, 0.5)),
        beta_neg=0.0 if rng.random() < 0.15 else float(rng.uniform(0.0, 0.5)),
        sigma_high=sigma_base if rng.random() < 0.1 else sigma_base * float(10 ** rng.uniform(0.0, 1.5)),
        adv_low=1.0 if rng.random() < 0.1 else float(rng.uniform(0.01, 1.0)),
        adv_high=1.0 if rng.random() < 0.1 else float(10 ** rng.uniform(0.0, 1.5)),
    )


def random_case(rng, shape, noise_scale):
    """float32-representable (log_prob, old_log_prob, advantages, mask) as float64 arrays."""
    B, T = shape
    old = np.log(rng.uniform(1e-6, 1.0, size=shape))
    lp = old + noise_scale * rng.standard_normal(shape)
    lp = np.where(rng.random(shape) < 0.1, old, lp)  # some exactly on-policy tokens (r = 1)
    kind = rng.integers(3)
    if kind == 0:  # GRPO-like: one advantage per response
        adv = np.repeat(rng.standard_normal((B, 1)) * rng.choice([0.5, 1.0, 3.0]), T, axis=1)
    else:
        adv = rng.standard_normal(shape) * rng.choice([0.5, 1.0, 3.0, 30.0])
    adv = np.where(rng.random(shape) < 0.2, 0.0, adv)
    if rng.random() < 0.5:  # right padding, some rows possibly empty
        lengths = rng.integers(0, T + 1, size=B)
        mask = np.arange(T)[None, :] < lengths[:, None]
    else:
        mask = rng.random(shape) < rng.uniform(0.3, 1.0)
    f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    return f32(lp), f32(old), f32(adv), mask


def run_torch(lp, old, adv, mask, params, dtype=torch.float32, lp_requires_grad=True):
    """(terms, log_prob, old_log_prob, advantages as the terms saw them (0 where masked: what the
    diagnostics take), mask) as tensors."""
    lp_t = torch.tensor(lp, dtype=dtype, requires_grad=lp_requires_grad)
    old_t = torch.tensor(old, dtype=dtype)
    adv_t = torch.tensor(adv, dtype=dtype)
    mask_t = torch.tensor(np.asarray(mask, bool))
    terms = maspo_token_loss(lp_t, old_t, adv_t, mask_t, params)
    if lp_requires_grad:
        terms.loss_mat.sum().backward()
    return terms, lp_t, old_t, torch.where(mask_t, adv_t.float(), 0.0), mask_t


def assert_grad_matches(grad_torch: np.ndarray, grad_ref: np.ndarray, scale: np.ndarray):
    """Gradients agree to float32 accuracy (MASPO's gate adds a relative 1e-3 of rounding)."""
    assert_close_grad(grad_torch, grad_ref, scale, rtol=1e-3)


def check_against_reference(terms, lp_t, ref: dict, params: dict | None = None):
    """Every term agrees with the reference at the valid tokens: log-ratio, ratio, sigma, the gate
    (within its float32 bracket, in (0, 1]), the quadrant flags away from r = 1, the loss, and with
    ``lp_t`` (after backward) the gradient; the loss and gradient are 0 where masked."""
    v = ref["mask"]
    np.testing.assert_allclose(np_(terms.log_ratio)[v], ref["log_ratio"][v], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np_(terms.ratio)[v], ref["rho"][v], rtol=1e-5)

    pos, neg = v & (ref["A"] > 0), v & (ref["A"] < 0)
    np.testing.assert_allclose(np_(terms.sigma)[pos], ref["sigma_pos"][pos], rtol=1e-5)
    np.testing.assert_allclose(np_(terms.sigma)[neg], ref["sigma_neg"][neg], rtol=1e-5)

    gate = np_(terms.gate)
    np.testing.assert_allclose(gate[v], ref["gate"][v], rtol=1e-3, atol=2 * F32_TINY)
    lo, hi = gate_bracket(ref)
    assert np.all((gate[v] >= lo[v]) & (gate[v] <= hi[v]))
    assert np.all((gate > 0) & (gate <= 1))

    # Quadrant flags: compare away from r == 1 where float32 may round exp(tiny) to 1.
    clear = v & ((np.abs(ref["raw_log_ratio"]) > 1e-5) | (ref["raw_log_ratio"] == 0))
    np.testing.assert_array_equal(terms.gate_pos.numpy()[clear], ref["agg_pos"][clear])
    np.testing.assert_array_equal(terms.gate_neg.numpy()[clear], ref["agg_neg"][clear])

    loss = np_(terms.loss_mat)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-3, atol=1e-20)
    assert np.all(loss[~v] == 0)
    assert_masked_grad_matches(lp_t, ref, np.abs(ref["A"] * ref["rho"]), rtol=1e-3)


# --------------------------------------------------------------------------------------
# 1. Forward pass vs the reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISE_SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_forward_matches_numpy_reference(seed, noise):
    rng = np.random.default_rng(1000 * seed + int(noise * 100))
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, noise)
        terms, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
        ref = np_reference(lp, old, adv, mask, p)
        v = ref["mask"]

        for t in terms:
            assert t.shape == shape
        check_against_reference(terms, None, ref)
        loss = np_(terms.loss_mat)
        # token-mean aggregation computed here from the code's loss_mat, vs the reference's
        scale = np.abs(ref["A"] * ref["rho"]).sum() / max(v.sum(), 1)
        assert np_token_mean(loss, v) == pytest.approx(
            np_token_mean(ref["loss"], v), rel=1e-3, abs=1e-5 * scale + 1e-30
        )


# --------------------------------------------------------------------------------------
# 2. Gradient: the gate is detached
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISE_SCALES)
@pytest.mark.parametrize("seed", SEEDS[:10])
def test_gradient_is_minus_A_g_rho(seed, noise):
    rng = np.random.default_rng(7_000 + 1000 * seed + int(noise * 100))
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, noise)
        terms, lp_t, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
        ref = np_reference(lp, old, adv, mask, p)
        grad = np_(lp_t.grad)
        assert_grad_matches(grad, ref["grad"], np.abs(ref["A"] * ref["rho"]))
        assert np.all(grad[~ref["mask"]] == 0)


def _strongly_gated_case():
    rng = np.random.default_rng(123)
    shape = (8, 33)
    old = np.log(rng.uniform(0.05, 1.0, size=shape))
    lp = old + 0.8 * rng.standard_normal(shape)
    adv = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)
    mask = np.ones(shape, bool)
    f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    return f32(lp), f32(old), f32(adv), mask, dict(DOC_DEFAULTS)


def test_gradient_check_can_tell_a_gate_with_gradient_apart():
    """The detached-gate check above would fail for the other algorithm (gradient through g)."""
    lp, old, adv, mask, p = _strongly_gated_case()
    ref = np_reference(lp, old, adv, mask, p)
    scale = np.abs(ref["A"] * ref["rho"])
    assert (ref["gate"] < 0.9).sum() > 10  # the case really exercises the gate

    # The analytic gradients of the two algorithms differ (and flip sign for large rho).
    assert not np.allclose(ref["grad"], ref["grad_through_gate"], rtol=1e-3)
    assert np.any(np.sign(ref["grad"]) != np.sign(ref["grad_through_gate"]))

    # A torch implementation that differentiates through g: the checker rejects it,
    # while it does match the through-gate analytic gradient (so both formulas are right).
    lp_t = torch.tensor(lp, dtype=torch.float32, requires_grad=True)
    old_t, adv_t = torch.tensor(old, dtype=torch.float32), torch.tensor(adv, dtype=torch.float32)
    rho = torch.exp((lp_t - old_t).clamp(-20, 20))
    sigma = torch.tensor(ref["sigma"], dtype=torch.float32)
    agg = torch.tensor(ref["agg_pos"] | ref["agg_neg"])
    g = torch.where(agg, torch.exp(-((rho - 1) ** 2) / (2 * sigma**2)), torch.ones_like(rho))
    (-adv_t * g * rho).sum().backward()
    wrong = np_(lp_t.grad)
    assert_grad_matches(wrong, ref["grad_through_gate"], scale)
    with pytest.raises(AssertionError):
        assert_grad_matches(wrong, ref["grad"], scale)

    # ... and the code under test passes it.
    terms, lp_t2, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
    assert_grad_matches(np_(lp_t2.grad), ref["grad"], scale)
    assert not terms.gate.requires_grad


# --------------------------------------------------------------------------------------
# 3. Properties
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_conservative_quadrants_are_never_damped(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 40)
    old = np.log(rng.uniform(1e-6, 1.0, size=shape))
    mag = np.abs(rng.standard_normal(shape)) * rng.choice([0.01, 1.0, 10.0, 30.0], size=shape)
    mag = np.where(rng.random(shape) < 0.2, 0.0, mag)  # r == 1 exactly
    sign_a = rng.choice([-1.0, 1.0], size=shape)
    adv = sign_a * rng.uniform(0.01, 50.0, size=shape)
    adv = np.where(rng.random(shape) < 0.15, 0.0, adv)
    # A > 0 -> r <= 1 (lr <= 0);  A < 0 -> r >= 1 (lr >= 0);  A == 0 -> anything
    lr = np.where(adv > 0, -mag, np.where(adv < 0, mag, mag * rng.choice([-1.0, 1.0], size=shape)))
    lp = (old + lr).astype(np.float32).astype(np.float64)
    old = old.astype(np.float32).astype(np.float64)
    adv = adv.astype(np.float32).astype(np.float64)
    lr32 = lp - old  # what the code will see; keep the construction honest
    assert np.all(np.where(adv > 0, lr32 <= 0, True)) and np.all(np.where(adv < 0, lr32 >= 0, True))
    mask = np.ones(shape, bool)
    p = dict(random_params(rng), dual_clip_c=0.0)  # the dual clip bounds conservative A < 0 moves on purpose
    terms, lp_t, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
    assert torch.all(terms.gate == 1.0)
    assert not terms.gate_pos.any() and not terms.gate_neg.any()
    rho = np.exp(np.clip(lr32, -20, 20))
    np.testing.assert_allclose(np_(terms.loss_mat), -adv * rho, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("seed", range(5))
def test_soft_gate_only_ablation(seed):
    rng = np.random.default_rng(100 + seed)
    sb = float(10 ** rng.uniform(-1, 0.7))
    p = dict(
        sigma_base=sb,
        alpha=0.0,
        beta_pos=0.0,
        beta_neg=0.0,
        sigma_high=sb * float(rng.uniform(1, 20)),
        adv_low=float(rng.uniform(0.01, 1)),
        adv_high=float(rng.uniform(1, 20)),
    )
    lp, old, adv, mask = random_case(rng, (8, 33), 1.0)
    adv = adv * 50  # large advantages too: the risk controller must stay off
    terms, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
    v = mask
    np.testing.assert_allclose(np_(terms.sigma)[v], sb, rtol=1e-6)
    r = np.exp(np.clip(lp - old, -20, 20))
    agg = v & (((adv > 0) & (r > 1)) | ((adv < 0) & (r < 1)))
    expected = np.where(agg, np.exp(-((r - 1) ** 2) / (2 * sb**2)), 1.0)
    np.testing.assert_allclose(np_(terms.gate)[v], expected[v], rtol=1e-3, atol=2 * F32_TINY)


@pytest.mark.parametrize("sigma_high_factor", [1.0, 10.0])
def test_huge_sigma_base_recovers_policy_gradient(sigma_high_factor):
    rng = np.random.default_rng(5)
    p = dict(DOC_DEFAULTS, sigma_base=1e6, sigma_high=1e6 * sigma_high_factor)
    lp, old, adv, mask = random_case(rng, (8, 64), 1.0)
    terms, lp_t, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
    rho = np.exp(np.clip(lp - old, -20, 20))
    np.testing.assert_allclose(np_(terms.gate), 1.0, atol=1e-6)
    np.testing.assert_allclose(np_(terms.loss_mat), np.where(mask, -adv * rho, 0), rtol=1e-5, atol=1e-30)
    np.testing.assert_allclose(np_(lp_t.grad), np.where(mask, -adv * rho, 0), rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize(
    "p",
    [
        dict(DOC_DEFAULTS),
        dict(DOC_DEFAULTS, sigma_base=0.2, alpha=0.7, beta_neg=0.3),
        dict(DOC_DEFAULTS, sigma_base=3.0, alpha=0.0, beta_pos=0.0),
    ],
)
@pytest.mark.parametrize("old_log_prob", [-0.01, -2.0, -12.0])
def test_gate_decreases_with_distance_in_aggressive_quadrants(p, old_log_prob):
    lr = np.linspace(0.0, 20.0, 401)
    n = lr.size
    old = np.full((2, n), old_log_prob)
    lp = old + np.stack([lr, -lr])  # row 0: r >= 1, row 1: r <= 1
    for a in (0.5, 3.0, 40.0):
        adv = np.array([[a], [-a]]) * np.ones((2, n))  # both rows aggressive
        terms, *_ = run_torch(lp, old, adv, np.ones((2, n), bool), MASPOParams(**p), lp_requires_grad=False)
        g = np_(terms.gate)
        for row in g:  # ordered by increasing |r - 1|
            assert row[0] == 1.0
            assert np.all(np.diff(row) <= 0)
            assert row[-1] < row[1] < 1.0
        assert np.all(g > 0)
        # same r with the conservative sign of A: never damped
        terms, *_ = run_torch(lp, old, -adv, np.ones((2, n), bool), MASPOParams(**p), lp_requires_grad=False)
        assert torch.all(terms.gate == 1.0)


@pytest.mark.parametrize(
    "p",
    [
        dict(DOC_DEFAULTS),
        dict(DOC_DEFAULTS, alpha=0.5, sigma_base=2.0, sigma_high=5.0),
        dict(DOC_DEFAULTS, alpha=1.0, sigma_base=0.3, sigma_high=30.0, beta_pos=0.5, beta_neg=0.5),
    ],
)
def test_low_probability_tokens_get_wider_sigma(p):
    old = np.linspace(0.0, -40.0, 801)[None, :]  # q decreasing from 1 to 4e-18
    # Mass term alone: monotone non-increasing in q, within [sigma_base, sigma_high], and it
    # matches sigma_base / q^alpha where that lies inside the bounds.
    m = np_(mass_adaptive_sigma(torch.tensor(old, dtype=torch.float32), MASPOParams(**p)))[0]
    assert np.all(np.diff(m) >= 0)
    assert np.all(m >= p["sigma_base"] * (1 - 1e-6)) and np.all(m <= p["sigma_high"] * (1 + 1e-6))
    assert m[0] == pytest.approx(p["sigma_base"], rel=1e-6)
    assert m[-1] == pytest.approx(p["sigma_high"], rel=1e-6)
    raw = p["sigma_base"] * np.exp(-old[0]) ** p["alpha"]
    inside = (raw > p["sigma_base"]) & (raw < p["sigma_high"])
    assert inside.sum() > 10
    assert np.all(np.diff(m[inside]) > 0)
    np.testing.assert_allclose(m[inside], raw[inside], rtol=1e-5)
    # q > 1 (a log-prob rounded slightly above 0) is held at the lower bound sigma_base.
    m_hi_q = np_(mass_adaptive_sigma(torch.tensor([[1e-6, 0.5, 3.0]]), MASPOParams(**p)))
    np.testing.assert_allclose(m_hi_q, p["sigma_base"], rtol=1e-6)
    # Through the loss with the risk factor fixed (same A on every token): same ordering.
    for a in (2.0, -2.0):
        shape = old.shape
        terms, *_ = run_torch(
            old + 0.3, old, np.full(shape, a), np.ones(shape, bool), MASPOParams(**p), lp_requires_grad=False
        )
        s = np_(terms.sigma)[0]
        assert np.all(np.diff(s) >= 0) and s[-1] > s[0]


def test_mass_limiter_off_with_alpha_zero():
    p = dict(DOC_DEFAULTS, alpha=0.0)
    old = torch.linspace(0.0, -40.0, 101)[None, :]
    m = np_(mass_adaptive_sigma(old, MASPOParams(**p)))
    np.testing.assert_allclose(m, 1.0, rtol=1e-7)


@pytest.mark.parametrize(
    "p",
    [
        dict(DOC_DEFAULTS),
        dict(DOC_DEFAULTS, beta_pos=0.5, beta_neg=0.5, adv_low=0.3, adv_high=3.0),
        dict(DOC_DEFAULTS, beta_pos=2.0, beta_neg=0.01, adv_low=1.0, adv_high=1.0),
    ],
)
def test_risk_factor_matches_formula_and_clamps(p):
    A = np.concatenate([-np.logspace(3, -3, 200), [0.0], np.logspace(-3, 3, 200)])
    A32 = A.astype(np.float32).astype(np.float64)
    factor = np_(risk_factor(torch.tensor(A32, dtype=torch.float32)[None, :], MASPOParams(**p)))[0]
    pos_f, neg_f = factor, factor  # each token's factor is that of its side
    ip, ineg = A32 > 0, A32 < 0
    assert np.all(factor[A32 == 0] == 1.0)  # no advantage, no risk adjustment
    exp_pos = np.clip(1 + p["beta_pos"] * A32[ip], p["adv_low"], p["adv_high"])
    exp_neg = np.clip(1 / (1 - p["beta_neg"] * A32[ineg]), p["adv_low"], p["adv_high"])
    np.testing.assert_allclose(pos_f[ip], exp_pos, rtol=1e-6)
    np.testing.assert_allclose(neg_f[ineg], exp_neg, rtol=1e-6)
    # bounds; clamps reached at the extremes when beta > 0
    assert np.all(pos_f[ip] >= p["adv_low"] * (1 - 1e-7)) and np.all(pos_f[ip] <= p["adv_high"] * (1 + 1e-7))
    assert np.all(neg_f[ineg] >= p["adv_low"] * (1 - 1e-7)) and np.all(neg_f[ineg] <= p["adv_high"] * (1 + 1e-7))
    if p["beta_pos"] * 1e3 + 1 > p["adv_high"]:
        assert pos_f[-1] == pytest.approx(p["adv_high"], rel=1e-7)
    if 1 / (1 + p["beta_neg"] * 1e3) < p["adv_low"]:
        assert neg_f[0] == pytest.approx(p["adv_low"], rel=1e-7)
    # positive A widens (factor >= 1, non-decreasing in A); negative A narrows
    # (factor <= 1, shrinking as A becomes more negative)
    assert np.all(pos_f[ip] >= 1 - 1e-7) and np.all(np.diff(pos_f[ip]) >= 0)
    assert np.all(neg_f[ineg] <= 1 + 1e-7) and np.all(np.diff(neg_f[ineg]) >= 0)

    # Same through the loss, where sigma = m * factor (sigma_pos where A > 0, sigma_neg where A < 0).
    shape = (1, A.size)
    old = np.full(shape, -3.0)
    terms, *_ = run_torch(old + 0.5, old, A32[None, :], np.ones(shape, bool), MASPOParams(**p), lp_requires_grad=False)
    m = min(max(p["sigma_base"] * math.exp(3.0 * p["alpha"]), p["sigma_base"]), p["sigma_high"])
    np.testing.assert_allclose(np_(terms.sigma)[0][ip], m * exp_pos, rtol=1e-5)
    np.testing.assert_allclose(np_(terms.sigma)[0][ineg], m * exp_neg, rtol=1e-5)
    if p["beta_pos"] > 0 and p["adv_high"] > 1:
        assert np_(terms.sigma)[0][-1] > m * 1.001  # large positive A: wider than m
    if p["beta_neg"] > 0 and p["adv_low"] < 1:
        assert np_(terms.sigma)[0][0] < m * 0.999  # large negative A: narrower than m


# --------------------------------------------------------------------------------------
# 4. Edge cases (the loss contract's cases, written once for every loss: tests/test_losses.py)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("name", ["log_prob", "old_log_prob", "advantages"])
def test_non_finite_values_at_valid_positions_raise(bad, name):
    rng = np.random.default_rng(12)
    lp, old, adv, mask = random_case(rng, (3, 8), 0.5)
    mask[:] = True
    arrays = dict(log_prob=lp, old_log_prob=old, advantages=adv)
    arrays[name] = arrays[name].copy()
    arrays[name][1, 4] = bad
    with pytest.raises(ValueError, match=name):
        run_torch(arrays["log_prob"], arrays["old_log_prob"], arrays["advantages"], mask, MASPOParams())


@pytest.mark.parametrize("dtype,rtol", [(torch.bfloat16, 0.1), (torch.float16, 0.015)])
def test_half_precision_stays_close_to_float32(dtype, rtol):
    """The gate is smooth in rho: half-rounded inputs move the loss and gradient by about their own
    rounding error (the float32 math on half inputs: the loss contract, tests/test_losses.py)."""
    rng = np.random.default_rng(21)
    shape = (8, 64)
    old = np.log(rng.uniform(1e-3, 1.0, size=shape))
    lp = old + 0.3 * rng.standard_normal(shape)
    adv = np.repeat(rng.standard_normal((8, 1)), 64, axis=1)
    mask = rng.random(shape) < 0.8
    p = dict(DOC_DEFAULTS)
    terms, lp_h, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p), dtype=dtype)
    terms32, lp32, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
    scale = np.abs(adv).max()
    np.testing.assert_allclose(np_(terms.loss_mat), np_(terms32.loss_mat), rtol=rtol, atol=rtol * scale * 0.1)
    np.testing.assert_allclose(np_(lp_h.grad), np_(lp32.grad), rtol=rtol, atol=rtol * scale * 0.1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_does_not_overflow_or_underflow_early(dtype):
    # fp16's exp overflows above ~11.09 and its smallest subnormal is 6e-8: a half-precision
    # computation would give inf / 0 here.
    old = np.array([[-1.0, -1.0, -1.0]])
    lp = old + np.array([[15.0, 3.0, -0.5]])
    adv = np.array([[-1.0, 1.0, -1.0]])  # (conservative, huge r) (gated, z ~ 8) (gated)
    p = dict(DOC_DEFAULTS, alpha=0.0, beta_pos=0.0, beta_neg=0.0, sigma_base=0.25, sigma_high=0.25)
    terms, lp_h, old_h, adv_h, _ = run_torch(lp, old, adv, np.ones((1, 3), bool), MASPOParams(**p), dtype=dtype)
    ref = np_reference(np_(lp_h), np_(old_h), np_(adv_h), np.ones((1, 3), bool), p)
    assert ref["gate"][0, 1] < 1e-30  # far below fp16's range
    np.testing.assert_allclose(np_(terms.loss_mat), ref["loss"], rtol=1e-3, atol=1e-36)
    np.testing.assert_allclose(np_(terms.gate), ref["gate"], rtol=1e-3, atol=2 * F32_TINY)
    assert np.isfinite(np_(terms.loss_mat)).all() and float(terms.ratio[0, 0].detach()) > 1e6


@pytest.mark.parametrize("p", [dict(DOC_DEFAULTS), dict(DOC_DEFAULTS, sigma_base=1e6, sigma_high=1e6)])
def test_the_gate_is_floored_past_the_clamp(p):
    """Log-ratios past the clamp (the loss contract, tests/test_losses.py), with MASPO's own: rho
    exact to 2e-6 up to e^20, and a gate that never reaches 0, so every token inside the clamp keeps
    a gradient however far it moved."""
    lr = np.array([-60.0, -25.0, -20.5, 20.5, 25.0, 60.0, -19.5, 19.5])
    n = lr.size
    old = np.full((2, n), -1.0)
    old[1] = -30.0
    lp = old + lr
    adv = np.array([[1.0] * n, [-2.0] * n])
    adv[1, ::2] = 3.0
    mask = np.ones((2, n), bool)
    terms, lp_t, *_ = run_torch(lp, old, adv, mask, MASPOParams(**p))
    ref = np_reference(lp, old, adv, mask, p)
    np.testing.assert_allclose(np_(terms.ratio), ref["rho"], rtol=2e-6)
    check_against_reference(terms, lp_t, ref)
    assert torch.all(terms.gate > 0)
    assert np.all(np_(lp_t.grad)[:, :6] == 0) and np.all(np_(lp_t.grad)[:, 6:] != 0)


def test_shape_mismatch_raises():
    good = torch.zeros(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    bad_shapes = [torch.zeros(3, 4), torch.zeros(3, 1), torch.zeros(5, 3), torch.zeros(3), torch.zeros(3, 5, 1)]
    for bad in bad_shapes:
        for i in range(3):
            args = [good, good, good]
            args[i] = bad
            with pytest.raises(ValueError):
                maspo_token_loss(*args, mask, MASPOParams())
        with pytest.raises(ValueError):
            maspo_token_loss(good, good, good, torch.ones_like(bad, dtype=torch.bool), MASPOParams())


def test_rollout_is_weights_multiply_the_loss():
    rng = np.random.default_rng(51)
    lp, old, adv, mask = random_case(rng, (4, 16), 0.5)
    w = rng.uniform(0.0, 2.0, size=lp.shape)
    w[~mask] = np.nan  # padding may hold anything
    p = dict(DOC_DEFAULTS)
    lp_t = torch.tensor(lp, dtype=torch.float32, requires_grad=True)
    terms = maspo_token_loss(
        lp_t,
        torch.tensor(old, dtype=torch.float32),
        torch.tensor(adv, dtype=torch.float32),
        torch.tensor(mask),
        MASPOParams(**p),
        rollout_is_weights=torch.tensor(w, dtype=torch.float32),
    )
    terms.loss_mat.sum().backward()
    ref = np_reference(lp, old, adv, mask, p)
    wz = np.where(mask, w, 0.0)
    np.testing.assert_allclose(np_(terms.loss_mat), ref["loss"] * wz, rtol=1e-3, atol=1e-20)
    assert_grad_matches(np_(lp_t.grad), ref["grad"] * wz, np.abs(ref["A"] * ref["rho"]))


# --------------------------------------------------------------------------------------
# 5. Hypothesis: finite everywhere for arbitrary finite inputs and any valid parameters
# --------------------------------------------------------------------------------------
@st.composite
def valid_params(draw):
    sb = draw(st.floats(1e-3, 1e3))
    return dict(
        sigma_base=sb,
        alpha=draw(st.floats(0.0, 2.0)),
        beta_pos=draw(st.floats(0.0, 10.0)),
        beta_neg=draw(st.floats(0.0, 10.0)),
        sigma_high=sb * draw(st.floats(1.0, 1e4)),
        adv_low=draw(st.floats(1e-3, 1.0)),
        adv_high=draw(st.floats(1.0, 1e3)),
    )


@st.composite
def loss_inputs(draw):
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 8)))
    f = lambda lo, hi: hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, width=32))  # noqa: E731
    lr, old, adv = draw(f(-50, 50)), draw(f(-50, 0)), draw(f(-1e3, 1e3))
    mask = draw(hnp.arrays(np.bool_, shape))
    lp = (old + lr).astype(np.float32).astype(np.float64)
    return lp, old, adv, mask


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=loss_inputs(), p=valid_params())
def test_hypothesis_loss_and_gradient_are_finite(inputs, p):
    lp, old, adv, mask = inputs
    terms, lp_t, _, adv_t, mask_t = run_torch(lp, old, adv, mask, MASPOParams(**p))
    loss, grad, gate = np_(terms.loss_mat), np_(lp_t.grad), np_(terms.gate)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert np.all((gate > 0) & (gate <= 1))
    assert np.all(loss[~mask] == 0) and np.all(grad[~mask] == 0)
    d = maspo_diagnostics(terms, adv_t, mask_t)
    assert all(math.isfinite(float(v)) for v in d.values())
    # and still the right numbers: gate within its float32 bracket, loss = -A g rho
    ref = np_reference(lp, old, adv, mask, p)
    lo, hi = gate_bracket(ref)
    assert np.all((gate[mask] >= lo[mask]) & (gate[mask] <= hi[mask]))
    np.testing.assert_allclose(loss, -ref["A"] * gate * ref["rho"], rtol=1e-5, atol=1e-30)


# --------------------------------------------------------------------------------------
# 6. MASPOParams validation (ranges and boundaries: the contract, tests/test_losses.py)
# --------------------------------------------------------------------------------------
def test_defaults_match_the_paper():
    p = MASPOParams()
    for k, v in DOC_DEFAULTS.items():
        assert getattr(p, k) == v, k


@pytest.mark.parametrize("key", list(DOC_DEFAULTS))
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "1.0", True, False, None])
def test_params_non_numbers_raise(key, value):
    with pytest.raises(ValueError) as e:
        MASPOParams(**{key: value})
    msg = str(e.value)
    assert key in msg and repr(value) in msg and "finite number" in msg, msg


# --------------------------------------------------------------------------------------
# 7. Diagnostics
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISE_SCALES)
@pytest.mark.parametrize("seed", SEEDS[:10])
def test_diagnostics_match_numpy(seed, noise):
    rng = np.random.default_rng(50_000 + 1000 * seed + int(noise * 100))
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, noise)
        ref = np_reference(lp, old, adv, mask, p)
        # Tokens whose float32 classification is ambiguous (within rounding of a threshold)
        # become padding, so the counts below are exact.
        rho, g, lr = ref["rho"], ref["gate"], ref["raw_log_ratio"]
        ambiguous = (
            ((np.abs(lr) < 1e-5) & (lr != 0))
            | (np.abs(rho - 1.2) < 1e-4)
            | (np.abs(rho - 0.8) < 1e-4)
            | (np.abs(g - 0.5) < 1e-3)
            | (np.abs(g * rho - p.get("dual_clip_c", 0.0)) < 1e-4 * (1 + rho))
        )
        mask = mask & ~ambiguous
        ref = np_reference(lp, old, adv, mask, p)
        terms, _, _, adv_t, mask_t = run_torch(lp, old, adv, mask, MASPOParams(**p), lp_requires_grad=False)
        d = {k: float(v) for k, v in maspo_diagnostics(terms, adv_t, mask_t).items()}
        e = np_diagnostics(ref, adv, mask)
        assert set(d) == set(e)
        for k in ("gated_frac_pos", "gated_frac_neg", "gate_below_half_frac", "clip_frac_ppo", "dual_clip_frac"):
            assert d[k] == pytest.approx(e[k], abs=1e-7), k
        assert d["gate_mean"] == pytest.approx(e["gate_mean"], rel=1e-3, abs=1e-6)
        for k in ("sigma_pos_mean", "sigma_neg_mean"):
            if e[k] is None:
                assert math.isfinite(d[k])
            else:
                assert d[k] == pytest.approx(e[k], rel=1e-5), k


def test_diagnostics_gate_mean_is_one_when_nothing_is_gated():
    # all moves conservative: A > 0 with r < 1 and A < 0 with r > 1
    old = np.full((2, 4), -1.0)
    lp = old + np.array([[-0.5, -1.0, -2.0, 0.0], [0.5, 1.0, 2.0, 0.0]])
    adv = np.array([[1.0] * 4, [-1.0] * 4])
    terms, _, _, adv_t, mask_t = run_torch(lp, old, adv, np.ones((2, 4), bool), MASPOParams(), lp_requires_grad=False)
    d = {k: float(v) for k, v in maspo_diagnostics(terms, adv_t, mask_t).items()}
    assert d["gate_mean"] == 1.0
    assert d["gated_frac_pos"] == d["gated_frac_neg"] == d["gate_below_half_frac"] == 0.0
    # the PPO comparison counts none of these either (they are on the safe side of the clip)
    assert d["clip_frac_ppo"] == 0.0


def test_diagnostics_hand_computed_small_case():
    # 4 valid tokens + 1 padded token holding values that would otherwise count everywhere.
    old = np.array([[-1.0, -1.0, -1.0, -1.0, -1.0]])
    lr = np.array([[math.log(1.5), math.log(0.5), math.log(1.1), math.log(1.5), math.log(3.0)]])
    adv = np.array([[1.0, -1.0, 1.0, -1.0, 5.0]])
    mask = np.array([[True, True, True, True, False]])
    p = dict(DOC_DEFAULTS, alpha=0.0, beta_pos=0.0, beta_neg=0.0, sigma_base=0.5, sigma_high=0.5)
    terms, _, _, adv_t, mask_t = run_torch(old + lr, old, adv, mask, MASPOParams(**p), lp_requires_grad=False)
    d = {k: float(v) for k, v in maspo_diagnostics(terms, adv_t, mask_t).items()}
    g = [math.exp(-(0.5**2) / (2 * 0.25)), math.exp(-(0.5**2) / (2 * 0.25)), math.exp(-(0.1**2) / (2 * 0.25))]
    assert d["gate_mean"] == pytest.approx(sum(g) / 3, rel=1e-5)
    assert d["gated_frac_pos"] == pytest.approx(2 / 4)
    assert d["gated_frac_neg"] == pytest.approx(1 / 4)
    assert d["gate_below_half_frac"] == pytest.approx(0.0)  # exp(-0.5) = 0.61
    assert d["sigma_pos_mean"] == pytest.approx(0.5, rel=1e-6)
    assert d["sigma_neg_mean"] == pytest.approx(0.5, rel=1e-6)
    assert d["clip_frac_ppo"] == pytest.approx(2 / 4)  # tokens 0 (A>0, r=1.5) and 1 (A<0, r=0.5)


# --------------------------------------------------------------------------------------
# Follow-ups from review: numpy scalars, ranges for non-finite values, IS weights, r ~ 1
# --------------------------------------------------------------------------------------
def test_numpy_scalar_params_are_accepted():
    params = MASPOParams(alpha=np.float32(0.5), sigma_base=np.float64(2.0), sigma_high=np.int64(20))
    assert math.isclose(params.alpha, 0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.3", True])
def test_non_number_message_still_names_the_range(bad):
    with pytest.raises(ValueError, match=r"adv_low=.* must be a finite number in \(0, 1\]"):
        MASPOParams(adv_low=bad)


def test_non_finite_rollout_is_weight_at_a_valid_position_is_refused():
    mask = torch.tensor([[True, True, False]])
    zeros = torch.zeros(1, 3)
    weights = torch.tensor([[float("nan"), 1.0, float("nan")]])
    with pytest.raises(ValueError, match="rollout_is_weights has 1 non-finite"):
        maspo_token_loss(zeros, zeros, torch.ones(1, 3), mask, MASPOParams(), rollout_is_weights=weights)
    # NaN only where masked: fine
    weights[0, 0] = 2.0
    terms = maspo_token_loss(zeros, zeros, torch.ones(1, 3), mask, MASPOParams(), rollout_is_weights=weights)
    assert torch.isfinite(terms.loss_mat).all()


def test_gate_keeps_its_precision_next_to_ratio_one():
    """With a very tight region, r - 1 ~ 1e-6 decides the gate; float32 exp(x) - 1 gets it ~10% wrong."""
    p = dict(DOC_DEFAULTS, sigma_base=1e-6, alpha=0.0, beta_pos=0.0, beta_neg=0.0, sigma_high=1e-6)
    log_ratio = np.array([[1e-6, 2e-6, -1.5e-6]])
    adv = np.array([[1.0, 1.0, -1.0]])
    old = np.full((1, 3), -1.0)
    terms = maspo_token_loss(
        torch.tensor(old + log_ratio, dtype=torch.float64),
        torch.tensor(old, dtype=torch.float64),
        torch.tensor(adv, dtype=torch.float32),
        torch.ones(1, 3, dtype=torch.bool),
        MASPOParams(**p),
    )
    # float32 rounding of old + log_ratio perturbs log_ratio itself by ~6e-8: take the value the code saw
    seen = terms.log_ratio.detach().double().numpy()
    expected = np.exp(-(np.expm1(seen) ** 2) / (2 * 1e-12))
    np.testing.assert_allclose(terms.gate.numpy(), expected, rtol=1e-4)


# --------------------------------------------------------------------------------------
# 8. The dual clip on negative tokens (a mechanism variant, off by default)
# --------------------------------------------------------------------------------------
def authors_loss(log_prob, old_log_prob, advantages, mask, params):
    """MASPO's per-token loss as maspo_terms computed it before the dual clip existed (the code at
    the commit that added it, verbatim but for the names): the default must stay this, bit for bit."""
    from maspo_verl.algos.common import importance_ratio, prepare_inputs
    from maspo_verl.algos.maspo import soft_gate, trust_region_sigma

    inputs = prepare_inputs(log_prob, old_log_prob, advantages, mask)
    log_ratio, ratio = importance_ratio(inputs)
    sigma = trust_region_sigma(inputs.old_log_prob, inputs.advantages, params)
    gate, _, _ = soft_gate(log_ratio, inputs.advantages, sigma, params.two_sided)
    return ratio * torch.mul(gate, inputs.advantages).neg_()


@pytest.mark.parametrize("seed", range(6))
def test_the_default_is_the_authors_loss_bit_for_bit(seed):
    rng = np.random.default_rng(90_000 + seed)
    p = dict(random_params(rng), dual_clip_c=0.0)
    lp, old, adv, mask = random_case(rng, (8, 33), 3.0)
    mask_t = torch.tensor(mask)
    old_t, adv_t = torch.tensor(old, dtype=torch.float32), torch.tensor(adv, dtype=torch.float32)
    lp_ours = torch.tensor(lp, dtype=torch.float32, requires_grad=True)
    lp_theirs = torch.tensor(lp, dtype=torch.float32, requires_grad=True)
    ours = maspo_token_loss(lp_ours, old_t, adv_t, mask_t, MASPOParams(**p)).loss_mat
    theirs = authors_loss(lp_theirs, old_t, adv_t, mask_t, MASPOParams(**p))
    ours.sum().backward()
    theirs.sum().backward()
    assert torch.equal(ours, theirs) and torch.equal(lp_ours.grad, lp_theirs.grad)
    assert MASPOParams().dual_clip_c == 0.0


@pytest.mark.parametrize("c", [1.05, 1.5, 3.0])
@pytest.mark.parametrize("two_sided", [False, True])
def test_the_dual_clip_matches_the_reference(c, two_sided):
    rng = np.random.default_rng(int(100 * c) + two_sided)
    # two-sided, the gate damps A < 0, r > 1 too: a wide one lets g r still pass every c
    p = dict(DOC_DEFAULTS, sigma_base=5.0 if two_sided else 0.5, two_sided=two_sided, dual_clip_c=c)
    shape = (32, 64)
    old = np.log(rng.uniform(1e-3, 1.0, size=shape))
    lp = old + rng.uniform(-0.5, 1.5, size=shape)  # r from 0.6 to 4.5: on both sides of every c
    adv = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 3.0, size=shape)
    mask = rng.random(shape) < 0.9
    f32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    lp, old, adv = f32(lp), f32(old), f32(adv)
    ref = np_reference(lp, old, adv, mask, p)
    product = ref["gate"] * ref["rho"]
    clear = ref["mask"] & (np.abs(product - c) > 1e-4 * product)  # float32 may put g r = c on either side
    terms, lp_t, _, adv_t, mask_t = run_torch(lp, old, adv, clear, MASPOParams(**p))
    ref = np_reference(lp, old, adv, clear, p)
    assert ref["dual_clipped"].sum() > 20  # the case exercises the bound
    assert ((ref["A"] < 0) & (ref["rho"] > 1) & clear & ~ref["dual_clipped"]).sum() > 10  # and tokens below it
    np.testing.assert_array_equal(terms.dual_clipped.numpy(), ref["dual_clipped"])
    np.testing.assert_allclose(np_(terms.loss_mat), ref["loss"], rtol=1e-3, atol=1e-20)
    assert_grad_matches(np_(lp_t.grad), ref["grad"], np.abs(ref["A"] * ref["rho"]))
    assert np.all(np_(lp_t.grad)[ref["dual_clipped"]] == 0)
    shares = maspo_diagnostics(terms, adv_t, mask_t)
    assert float(shares["dual_clip_frac"]) == pytest.approx(ref["dual_clipped"].sum() / clear.sum(), abs=1e-7)


def test_the_dual_clip_acts_only_on_negative_tokens_past_c():
    """By hand: c = 2, one-sided MASPO (g = 1 for A < 0, r > 1)."""
    old = np.zeros((1, 5))
    r = np.array([[2.5, 1.9, 2.5, 0.5, 2.5]])
    adv = np.array([[-1.0, -1.0, 1.0, -2.0, 0.0]])
    terms, lp_t, *_ = run_torch(np.log(r), old, adv, np.ones((1, 5), bool), MASPOParams(dual_clip_c=2.0))
    np.testing.assert_array_equal(terms.dual_clipped.numpy(), [[True, False, False, False, False]])
    assert np_(terms.loss_mat)[0, 0] == pytest.approx(2.0)  # -A * c, not -A * r = 2.5
    assert np_(terms.loss_mat)[0, 1] == pytest.approx(1.9, rel=1e-6)  # below c: -A * r
    grad = np_(lp_t.grad)[0]
    assert grad[0] == 0.0 and grad[1] == pytest.approx(1.9, rel=1e-6)
    assert grad[2] != 0.0 and grad[3] != 0.0  # A > 0 and A < 0 with r < 1 keep theirs


# The reference, as the loss contract (tests/test_losses.py) runs it: the edge cases, compilation
REFERENCE = LossReference(
    spec=LOSS,
    defaults=dict(DOC_DEFAULTS),
    draw=random_case,
    reference=np_reference,
    check=check_against_reference,
    diagnostics=lambda ref: np_diagnostics(ref, ref["A"], ref["mask"]),
    ambiguous=lambda ref, p: np.zeros(
        ref["mask"].shape, bool
    ),  # the gate is continuous; flags are compared away from r = 1
    acted=lambda terms: terms.gate_pos | terms.gate_neg | (terms.gate != 1),
    out_of_range=(
        ({"sigma_base": 0.0}, "sigma_base", "> 0"),
        ({"sigma_base": -1.0}, "sigma_base", "> 0"),
        ({"alpha": -0.1}, "alpha", ">= 0"),
        ({"beta_pos": -0.01}, "beta_pos", ">= 0"),
        ({"beta_neg": -1}, "beta_neg", ">= 0"),
        ({"sigma_high": 0.5}, "sigma_high", ">= sigma_base"),
        ({"sigma_base": 3.0, "sigma_high": 2.0}, "sigma_high", ">= sigma_base"),  # a custom sigma_base
        ({"adv_low": 0.0}, "adv_low", "(0, 1]"),
        ({"adv_low": -0.5}, "adv_low", "(0, 1]"),
        ({"adv_low": 1.5}, "adv_low", "(0, 1]"),
        ({"adv_high": 0.99}, "adv_high", ">= 1"),
        ({"adv_high": -3.0}, "adv_high", ">= 1"),
        (
            {"dual_clip_c": 1.0},
            "dual_clip_c",
            "0 (off, the authors' design) or > 1",
        ),  # verl's dual clip needs c > 1 too
        ({"dual_clip_c": 0.5}, "dual_clip_c", "0 (off, the authors' design) or > 1"),
        ({"dual_clip_c": -1.0}, "dual_clip_c", "0 (off, the authors' design) or > 1"),
    ),
    boundaries=(
        dict(alpha=0.0, beta_pos=0.0, beta_neg=0.0),
        dict(sigma_base=2, sigma_high=2),
        dict(sigma_base=3.0, sigma_high=3.0),
        dict(adv_low=1.0, adv_high=1.0),
        dict(sigma_base=1e-6, adv_low=1e-9, adv_high=1e9, sigma_high=1e9),
        dict(alpha=np.float64(0.5)),
        dict(dual_clip_c=0.0),
        dict(dual_clip_c=1.0000001),
        dict(sigma_base=0.2),  # a narrower gate, preset-free: sigma_high (10) stays above it
    ),
    variants=(dict(beta_pos=0.5, beta_neg=0.5, adv_low=0.05, adv_high=20.0), dict(sigma_base=1e6, sigma_high=1e6)),
)
