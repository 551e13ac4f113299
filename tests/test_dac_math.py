"""DAC (DCPO's dynamic adaptive clipping) against an independent NumPy (float64) reference.

The reference below is written from the DCPO paper (arXiv 2509.02333, docs/algorithms.md), not from maspo_verl/algos/dac.py:

    q       = exp(old_log_prob)
    rho     = exp(clamp(log_prob - old_log_prob, -20, 20))
    r_low   = 0.5 + 0.5 sqrt(max(1 - 4 eps_low / q, 0))
    r_high  = min(0.5 + 0.5 sqrt(1 + 4 eps_high / q), max(clip_ratio_c, 10))
    loss    = -min(rho A, clip(rho, r_low, r_high) A);  for A < 0: min(loss, -A clip_ratio_c)
    d loss / d log_prob = -A rho where the unclipped branch is the active one, else 0.

Tokens within float32 rounding of a threshold (rho at a bound or at clip_ratio_c) are made
padding before comparing, so that classifications (and hence gradients) are exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expected import DAC_DEFAULTS as DOC_DEFAULTS
from loss_reference import LossReference
from maspo_verl.algos.common import check_finite_where_valid, prepare_inputs
from maspo_verl.algos.dac import LOSS, DACParams, dac_bounds, dac_diagnostics, dac_terms
from numeric import assert_clipped_terms_match, assert_grad_matches, f32, loss_inputs, np_, np_clipped_loss, np_inputs

SHAPES = [(1, 1), (3, 7), (8, 33), (16, 128), (2, 1), (1, 50)]
NOISE_SCALES = [0.05, 0.5, 3.0]
SEEDS = list(range(25))


# --------------------------------------------------------------------------------------
# Independent NumPy reference (float64)
# --------------------------------------------------------------------------------------
def np_bounds(old, p):
    q = np.exp(np.asarray(old, np.float64))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        low = 0.5 + 0.5 * np.sqrt(np.maximum(1.0 - 4.0 * p["eps_low"] / q, 0.0))
        high = 0.5 + 0.5 * np.sqrt(1.0 + 4.0 * p["eps_high"] / q)
    cap = max(p["clip_ratio_c"], 10.0)
    return low, np.minimum(high, cap)


def np_reference(log_prob, old_log_prob, adv, mask, p):
    mask, _, old, A, raw, rho = np_inputs(log_prob, old_log_prob, adv, mask)
    low, high = np_bounds(old, p)
    loss, grad, clip_low, clip_high, dual = np_clipped_loss(rho, raw, A, mask, low, high, p["clip_ratio_c"])
    return dict(mask=mask, A=A, old=old, raw=raw, rho=rho, low=low, high=high, loss=loss, grad=grad,
                clip_low=clip_low, clip_high=clip_high, dual=dual)  # fmt: skip


def np_diagnostics(ref):
    v = ref["mask"]
    n = int(v.sum())
    frac = lambda b: float((b & v).sum() / n) if n else 0.0  # noqa: E731
    mean = lambda x: float(x[v].mean()) if n else 0.0  # noqa: E731
    return dict(
        clip_frac_low=frac(ref["clip_low"]), clip_frac_high=frac(ref["clip_high"]), dual_clip_frac=frac(ref["dual"]),
        bound_low_mean=mean(ref["low"]), bound_high_mean=mean(ref["high"]),
    )  # fmt: skip


def ambiguous(ref, p, rel=1e-5):
    """Tokens whose float32 classification could differ from the float64 one."""
    rho, raw = ref["rho"], ref["raw"]
    near = lambda x: np.abs(rho - x) <= rel * np.abs(x)  # noqa: E731
    return near(ref["low"]) | near(ref["high"]) | near(p["clip_ratio_c"]) | (np.abs(np.abs(raw) - 20.0) < 1e-4)


# --------------------------------------------------------------------------------------
# Input generation and running the code under test
# --------------------------------------------------------------------------------------


def random_params(rng):
    if rng.random() < 0.2:
        return dict(DOC_DEFAULTS)
    return dict(
        eps_low=0.25 if rng.random() < 0.1 else float(rng.uniform(1e-4, 0.25)),
        eps_high=float(10 ** rng.uniform(-4, 0.5)),
        clip_ratio_c=float(rng.choice([3.0, 1.5, 10.0, 30.0])) if rng.random() < 0.5 else float(rng.uniform(1.01, 40)),
    )


def random_case(rng, shape, noise, p):
    B, T = shape
    old = np.log(rng.uniform(1e-6, 1.0, size=shape))
    old = np.where(rng.random(shape) < 0.15, -rng.uniform(0, 25, size=shape), old)  # down to q = e^-25
    old = np.where(rng.random(shape) < 0.05, 0.0, old)  # q = 1
    lp = old + noise * rng.standard_normal(shape)
    lp = np.where(rng.random(shape) < 0.1, old, lp)
    if rng.integers(3) == 0:
        adv = np.repeat(rng.standard_normal((B, 1)) * rng.choice([0.5, 1.0, 3.0]), T, axis=1)
    else:
        adv = rng.standard_normal(shape) * rng.choice([0.5, 1.0, 3.0, 30.0])
    adv = np.where(rng.random(shape) < 0.15, 0.0, adv)
    if rng.random() < 0.5:
        mask = np.arange(T)[None, :] < rng.integers(0, T + 1, size=B)[:, None]
    else:
        mask = rng.random(shape) < rng.uniform(0.3, 1.0)
    lp, old, adv = f32(lp), f32(old), f32(adv)
    mask = mask & ~ambiguous(np_reference(lp, old, adv, np.ones(shape, bool), p), p)
    return lp, old, adv, mask


def run_torch(lp, old, adv, mask, params, dtype=torch.float32, grad=True):
    lp_t = torch.tensor(np.asarray(lp), dtype=dtype, requires_grad=grad)
    old_t = torch.tensor(np.asarray(old), dtype=dtype)
    adv_t = torch.tensor(np.asarray(adv), dtype=dtype)
    mask_t = torch.tensor(np.asarray(mask, bool))
    check_finite_where_valid(mask_t, "DAC", log_prob=lp_t, old_log_prob=old_t, advantages=adv_t)
    inputs = prepare_inputs(lp_t, old_t, adv_t, mask_t)
    terms = dac_terms(inputs, params)
    if grad:
        terms.loss_mat.sum().backward()
    return terms, lp_t, inputs


def check_against_reference(terms, lp_t, ref, params=None):
    """Ratio, bounds, loss and clip flags agree with the reference at the valid tokens, and with
    ``lp_t`` (after backward) the gradient; the loss and gradient are 0 where masked."""
    v = ref["mask"]
    np.testing.assert_allclose(np_(terms.ratio)[v], ref["rho"][v], rtol=1e-5)
    # r_low = 0.5 + 0.5 sqrt(y): compare y = (2 r_low - 1)^2 absolutely (the square root
    # magnifies float32 rounding of y next to y = 0; y = 1 - exp(log(4 eps_low) - old) carries
    # an absolute error of a few ulps of |old|), and r_low itself away from y = 0
    y_got, y_want = (2 * np_(terms.bound_low)[v] - 1) ** 2, (2 * ref["low"][v] - 1) ** 2
    bad = ~(np.abs(y_got - y_want) <= 1e-6 * y_want + 2e-7 * (1 + np.abs(ref["old"][v])))
    assert not bad.any(), (y_got[bad][:5], y_want[bad][:5])
    far = y_want > 1e-3
    np.testing.assert_allclose(np_(terms.bound_low)[v][far], ref["low"][v][far], rtol=1e-6)
    np.testing.assert_allclose(np_(terms.bound_high)[v], ref["high"][v], rtol=1e-6)
    assert_clipped_terms_match(terms, lp_t, ref)


# --------------------------------------------------------------------------------------
# 1. Forward and gradient vs the reference, many seeds and shapes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("noise", NOISE_SCALES)
@pytest.mark.parametrize("seed", SEEDS)
def test_forward_and_gradient_match_numpy(seed, noise):
    rng = np.random.default_rng(1000 * seed + int(noise * 100))
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, noise, p)
        terms, lp_t, _ = run_torch(lp, old, adv, mask, DACParams(**p))
        ref = np_reference(lp, old, adv, mask, p)
        for t in terms:
            assert t.shape == shape
        check_against_reference(terms, lp_t, ref)
        assert not terms.bound_low.requires_grad and not terms.bound_high.requires_grad


@pytest.mark.parametrize("noise", NOISE_SCALES)
@pytest.mark.parametrize("seed", SEEDS[:10])
def test_diagnostics_match_numpy(seed, noise):
    rng = np.random.default_rng(90_000 + 1000 * seed + int(noise * 100))
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, noise, p)
        terms, _, inputs = run_torch(lp, old, adv, mask, DACParams(**p), grad=False)
        d = {k: float(v) for k, v in dac_diagnostics(terms, inputs.advantages, inputs.mask).items()}
        e = np_diagnostics(np_reference(lp, old, adv, mask, p))
        assert set(d) == set(e)
        for k in ("clip_frac_low", "clip_frac_high", "dual_clip_frac"):
            assert d[k] == pytest.approx(e[k], abs=1e-7), k
        for k in ("bound_low_mean", "bound_high_mean"):
            assert d[k] == pytest.approx(e[k], rel=1e-5), k


def test_diagnostics_hand_computed():
    # q = 1 everywhere: bounds [0.8, 1.1708]; 5 valid tokens and one padded token
    old = np.zeros((1, 6))
    rho = np.array([[0.5, 0.5, 1.5, 1.5, 4.0, 9.0]])
    adv = np.array([[-1.0, 1.0, 1.0, -1.0, -2.0, 1.0]])
    mask = np.array([[True, True, True, True, True, False]])
    terms, _, inputs = run_torch(np.log(rho), old, adv, mask, DACParams(), grad=False)
    d = {k: float(v) for k, v in dac_diagnostics(terms, inputs.advantages, inputs.mask).items()}
    assert d["clip_frac_low"] == pytest.approx(1 / 5)  # token 0 (A<0, r below 0.8)
    assert d["clip_frac_high"] == pytest.approx(1 / 5)  # token 2 (A>0, r above 1.17)
    assert d["dual_clip_frac"] == pytest.approx(1 / 5)  # token 4 (A<0, r=4 > 3)
    assert d["bound_low_mean"] == pytest.approx(0.8, rel=1e-6)
    assert d["bound_high_mean"] == pytest.approx(0.5 + 0.5 * math.sqrt(1.8), rel=1e-6)
    np.testing.assert_allclose(
        np_(terms.loss_mat), [[0.8, -0.5, -(0.5 + 0.5 * math.sqrt(1.8)), 1.5, 6.0, 0.0]], rtol=1e-6
    )


# --------------------------------------------------------------------------------------
# 2. The bounds: exact values, limits, cap, monotonicity
# --------------------------------------------------------------------------------------
def bounds_of(old_values, **kw):
    p = DACParams(**kw)
    low, high = dac_bounds(torch.tensor([old_values], dtype=torch.float32), p)
    return np_(low)[0], np_(high)[0]


def test_bounds_at_q_equal_one_are_exact():
    low, high = bounds_of([0.0])
    assert low[0] == pytest.approx(0.8, abs=2e-7)  # 0.5 + 0.5 sqrt(1 - 0.64)
    assert high[0] == pytest.approx(0.5 + 0.5 * math.sqrt(1.8), abs=2e-7)
    low, high = bounds_of([0.0], eps_low=0.25, eps_high=2.0)
    assert low[0] == 0.5 and high[0] == pytest.approx(2.0, abs=2e-7)  # sqrt(1 + 8) = 3


def test_bounds_as_q_goes_to_zero_reach_their_limits_without_nan():
    # e^-20 (the brief's smallest realistic q), then far below float32's exp range, then -inf via padding
    old = [-20.0, -30.0, -88.0, -89.0, -104.0, -200.0, -1e4, -3e38]
    for c, cap in ((3.0, 10.0), (1.5, 10.0), (25.0, 25.0), (1e6, 1e6)):
        low, high = bounds_of(old, clip_ratio_c=c)
        assert np.all(np.isfinite(low)) and np.all(np.isfinite(high))
        np.testing.assert_array_equal(low, 0.5)
        if cap < 1e4:
            np.testing.assert_array_equal(high, cap)
        else:  # a cap beyond the bound's value at q = e^-20 (~1.1e4): uncapped there
            assert high[0] == pytest.approx(0.5 + 0.5 * math.sqrt(1 + 0.8 * math.exp(20)), rel=1e-5)
            assert np.all(high[2:] == cap)
    # masked -inf / NaN old log-probs are sanitised to q = 1 before the bounds are formed
    lp = torch.zeros(1, 3)
    old_t = torch.tensor([[float("-inf"), float("nan"), -20.0]])
    inputs = prepare_inputs(lp, old_t, torch.ones(1, 3), torch.tensor([[False, False, True]]))
    terms = dac_terms(inputs, DACParams())
    np.testing.assert_allclose(np_(terms.bound_low)[0], [0.8, 0.8, 0.5], atol=2e-7)
    np.testing.assert_allclose(np_(terms.bound_high)[0], [0.5 + 0.5 * math.sqrt(1.8)] * 2 + [10.0], atol=2e-7)
    assert torch.isfinite(terms.loss_mat).all()


def test_lower_bound_is_half_below_four_eps_low():
    eps = 0.16
    q = np.array([0.5 * 4 * eps, 4 * eps * 0.999, 4 * eps, 4 * eps * 1.001, 0.9, 1.0])
    low, _ = bounds_of(list(np.log(q)), eps_low=eps)
    assert np.all(low[:2] == 0.5)
    assert low[2] == pytest.approx(0.5, abs=1e-3)  # exactly at the threshold, up to float32 rounding of q
    assert low[3] > 0.5 and low[3] == pytest.approx(0.5 + 0.5 * math.sqrt(1 - 1 / 1.001), rel=1e-3)


@pytest.mark.parametrize("c", [3.0, 15.0])
def test_upper_bound_cap(c):
    eps = 0.2
    cap = max(c, 10.0)
    q_cap = 4 * eps / ((2 * cap - 1) ** 2 - 1)  # where the uncapped bound equals the cap
    q = np.array([q_cap * 0.5, q_cap * 0.99, q_cap * 1.01, q_cap * 2])
    _, high = bounds_of(list(np.log(q)), eps_high=eps, clip_ratio_c=c)
    assert high[0] == cap and high[1] == cap
    assert high[2] < cap and high[2] == pytest.approx(0.5 + 0.5 * math.sqrt(1 + 4 * eps / q[2]), rel=1e-5)
    assert high[3] < high[2]


@pytest.mark.parametrize("p", [DOC_DEFAULTS, dict(eps_low=0.01, eps_high=3.0, clip_ratio_c=50.0)])
def test_bounds_are_monotone_and_solve_their_equations(p):
    old = np.linspace(-25.0, 0.0, 2001)
    low, high = bounds_of(list(old), **p)
    q = np.exp(f32(old))
    assert np.all(np.diff(low) >= 0) and np.all(np.diff(high) <= 0)  # wider for rarer tokens
    assert np.all((low >= 0.5) & (low < 1)) and np.all((high > 1) & (high <= max(p["clip_ratio_c"], 10)))
    # r (1 - r) q = eps_low where the lower bound is above 0.5; r (r - 1) q = eps_high below the cap
    lo = low > 0.5 + 1e-3
    np.testing.assert_allclose(low[lo] * (1 - low[lo]) * q[lo], p["eps_low"], rtol=1e-3)
    hi = high < max(p["clip_ratio_c"], 10) * (1 - 1e-6)
    np.testing.assert_allclose(high[hi] * (high[hi] - 1) * q[hi], p["eps_high"], rtol=1e-4)
    ref_low, ref_high = np_bounds(f32(old), p)
    np.testing.assert_allclose(low, ref_low, rtol=1e-6)
    np.testing.assert_allclose(high, ref_high, rtol=1e-6)


def test_rare_tokens_are_clipped_less_than_with_a_fixed_clip():
    """The point of DAC: a positive token at rho = 2 is clipped if q is large, not if q is small."""
    old = np.log(np.array([[0.9, 0.05, 1e-3]]))
    lp = old + math.log(2.0)
    terms, lp_t, _ = run_torch(lp, old, np.ones((1, 3)), np.ones((1, 3), bool), DACParams())
    assert terms.clipped_high.tolist() == [[True, False, False]]
    np.testing.assert_allclose(np_(lp_t.grad), [[0.0, -2.0, -2.0]], rtol=1e-6)


# --------------------------------------------------------------------------------------
# 3. Dual clip (A < 0) and the clipped branches
# --------------------------------------------------------------------------------------
def test_dual_clip_for_negative_advantages_only():
    old = np.full((2, 4), -3.0)  # q ~ 0.05: r_high ~ 2.5, below the dual-clip bound 3
    rho = np.array([[2.0, 3.5, 6.0, 30.0]] * 2)
    adv = np.array([[-2.0] * 4, [2.0] * 4])
    terms, lp_t, _ = run_torch(old + np.log(rho), old, adv, np.ones((2, 4), bool), DACParams())
    loss, grad = np_(terms.loss_mat), np_(lp_t.grad)
    # A < 0: -A * min(max(r, clip(r)), 3) -> 2 r until r = 3, then 2 * 3 with no gradient
    np.testing.assert_allclose(loss[0], [4.0, 6.0, 6.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(grad[0], [4.0, 0.0, 0.0, 0.0], rtol=1e-6)
    assert terms.dual_clipped[0].tolist() == [False, True, True, True]
    # A > 0: no dual clip; the upper bound clips (constant -A r_high, no gradient)
    high = float(terms.bound_high[1, 0])
    assert 2.0 < high < 3.0
    np.testing.assert_allclose(loss[1], [-4.0] + [-2 * high] * 3, rtol=1e-6)
    np.testing.assert_allclose(grad[1], [-4.0, 0.0, 0.0, 0.0], rtol=1e-6)
    assert not terms.dual_clipped[1].any()


def test_conservative_moves_are_never_clipped():
    # A > 0 with r below r_low and A < 0 with r above r_high (below clip_ratio_c's cap region)
    old = np.zeros((2, 3))
    rho = np.array([[0.1, 0.5, 0.79], [1.18, 1.5, 2.9]])
    adv = np.array([[1.0] * 3, [-1.0] * 3])
    terms, lp_t, _ = run_torch(np.log(rho), old, adv, np.ones((2, 3), bool), DACParams())
    np.testing.assert_allclose(np_(terms.loss_mat), -adv * rho, rtol=1e-6)
    np.testing.assert_allclose(np_(lp_t.grad), -adv * rho, rtol=1e-5)
    assert not (terms.clipped_low | terms.clipped_high | terms.dual_clipped).any()


# --------------------------------------------------------------------------------------
# 4. Hypothesis: finite and right for arbitrary finite inputs and any valid parameters
# --------------------------------------------------------------------------------------
@st.composite
def valid_params(draw):
    return dict(
        eps_low=draw(st.floats(1e-6, 0.25)),
        eps_high=draw(st.floats(1e-6, 1e3)),
        clip_ratio_c=draw(st.floats(1.0001, 1e4)),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=loss_inputs(), p=valid_params())
def test_hypothesis_loss_and_gradient_are_finite_and_right(inputs, p):
    lp, old, adv, mask = inputs
    terms, lp_t, inputs_t = run_torch(lp, old, adv, mask, DACParams(**p))
    loss, grad = np_(terms.loss_mat), np_(lp_t.grad)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert np.all(loss[~mask] == 0) and np.all(grad[~mask] == 0)
    low, high = np_(terms.bound_low), np_(terms.bound_high)
    assert np.all((low >= 0.5) & (low < 1) & (high > 1) & (high <= np.float32(max(p["clip_ratio_c"], 10.0))))
    d = dac_diagnostics(terms, inputs_t.advantages, inputs_t.mask)
    assert all(math.isfinite(float(x)) for x in d.values())
    ref = np_reference(lp, old, adv, mask, p)
    keep = ref["mask"] & ~ambiguous(ref, p, rel=1e-4)
    np.testing.assert_allclose(loss[keep], ref["loss"][keep], rtol=1e-5, atol=1e-30)
    assert_grad_matches(grad[keep], ref["grad"][keep], np.abs(ref["A"][keep]) * np.maximum(ref["rho"][keep], 1))


# --------------------------------------------------------------------------------------
# 5. Params and spec (ranges and boundaries: the loss contract, tests/test_losses.py)
# --------------------------------------------------------------------------------------
def test_defaults_and_spec():
    p = DACParams()
    assert (p.eps_low, p.eps_high, p.clip_ratio_c) == (0.16, 0.2, 3.0)
    assert LOSS.name == "dac" and LOSS.params is DACParams and LOSS.terms is dac_terms
    assert LOSS.config_class_name == "DACPolicyLossConfig"
    assert LOSS.actor_keys == ("clip_ratio_c",)


# The reference, as the loss contract (tests/test_losses.py) runs it: the edge cases, compilation
REFERENCE = LossReference(
    spec=LOSS,
    defaults=dict(DOC_DEFAULTS),
    draw=lambda rng, shape, noise: random_case(rng, shape, noise, DOC_DEFAULTS),
    reference=np_reference,
    check=check_against_reference,
    diagnostics=np_diagnostics,
    ambiguous=ambiguous,
    acted=lambda terms: terms.clipped_low | terms.clipped_high | terms.dual_clipped,
    out_of_range=(
        ({"eps_low": 0.0}, "eps_low", "(0, 0.25]"),
        ({"eps_low": 0.26}, "eps_low", "(0, 0.25]"),
        ({"eps_low": -0.1}, "eps_low", "(0, 0.25]"),
        ({"eps_high": 0.0}, "eps_high", "> 0"),
        ({"eps_high": -1.0}, "eps_high", "> 0"),
        ({"clip_ratio_c": 1.0}, "clip_ratio_c", "> 1"),
        ({"clip_ratio_c": 0.5}, "clip_ratio_c", "> 1"),
    ),
    boundaries=(
        dict(eps_low=0.25, eps_high=1e-9, clip_ratio_c=1.0 + 1e-9),
        dict(eps_low=np.float32(0.1), eps_high=np.float64(5.0), clip_ratio_c=np.int64(4)),
    ),
    variants=(dict(eps_low=0.01, eps_high=3.0, clip_ratio_c=50.0),),
)
