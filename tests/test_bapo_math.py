"""BAPO (adaptive clip bounds) against an independent NumPy (float64) reference.

The reference is written from the BAPO paper (arXiv 2510.18927, docs/algorithms.md) and the brief, not from
maspo_verl/algos/bapo.py. It simulates the search step by step, like the authors' loop:

    start at (c_low_start, c_high_start); while share < rho0: move the lower bound up one step
    (to at most c_low_max), once it is at its maximum the upper bound (to at most c_high_max);
    stop when both are at their maxima.  (upper_first: the other way round.)
    share = pos / (pos + neg), 1 when pos + neg = 0, with
    pos = sum |r A| over A > 0, r <= c_high;  neg = sum |r A| over A < 0, r >= c_low  (r detached)
    loss  = -min(rho A, clip(rho, c_low, c_high) A);  for A < 0: min(loss, -A clip_ratio_c)

The code compares in float32, so the reference compares r with the float32 value of each bound;
tokens within 1e-5 (relative) of a bound become padding, and cases where a candidate's share is
within 1e-5 of rho0 are redrawn, so that choices can be compared exactly.
"""

from __future__ import annotations

import math
import os
import queue as queue_module
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expected import BAPO_DEFAULTS as DOC_DEFAULTS
from gloo_ranks import free_port
from loss_reference import LossReference
from maspo_verl.algos.bapo import LOSS, BAPOParams, bapo_diagnostics, bapo_terms, choose_bounds
from maspo_verl.algos.common import prepare_inputs
from numeric import assert_clipped_terms_match, f32, loss_inputs, np_, np_clipped_loss, np_inputs

SHAPES = [(1, 1), (3, 7), (8, 33), (16, 128), (2, 1), (1, 50)]
SEEDS = list(range(30))


# --------------------------------------------------------------------------------------
# Independent reference
# --------------------------------------------------------------------------------------
def np_steps(start, stop, step):
    """The values a bound takes, one step at a time (a step past the maximum stops at it;
    a step landing within 1e-9 of it counts as reaching it)."""
    values, c = [start], start
    while stop - c > 1e-9:
        c = min(c + step, stop)
        values.append(c)
    values[-1] = stop
    return values


def np_share(r, A, mask, c_low, c_high):
    c_low, c_high = float(np.float32(c_low)), float(np.float32(c_high))
    w = np.abs(r * A)
    pos = w[mask & (A > 0) & (r <= c_high)].sum()
    neg = w[mask & (A < 0) & (r >= c_low)].sum()
    return pos / (pos + neg) if pos + neg > 0 else 1.0


def np_all_candidates(p):
    """Every pair the search can visit, in order (the full walk, never stopping early)."""
    lows = np_steps(p["c_low_start"], p["c_low_max"], p["step_low"])
    highs = np_steps(p["c_high_start"], p["c_high_max"], p["step_high"])
    if p.get("upper_first", True):
        return [(lows[0], h) for h in highs] + [(lo, highs[-1]) for lo in lows[1:]]
    return [(lo, highs[0]) for lo in lows] + [(lows[-1], h) for h in highs[1:]]


def np_search(r, A, mask, p):
    """Step-by-step search, as a plain loop: the chosen pair, its share, whether met, the walk."""
    lows = np_steps(p["c_low_start"], p["c_low_max"], p["step_low"])
    highs = np_steps(p["c_high_start"], p["c_high_max"], p["step_high"])
    i = j = 0
    walk = []
    while True:
        c_low, c_high = lows[i], highs[j]
        s = np_share(r, A, mask, c_low, c_high)
        walk.append((c_low, c_high, s))
        if s >= p["rho0"]:
            return c_low, c_high, s, True, walk
        if p.get("upper_first", True):
            if j + 1 < len(highs):
                j += 1
            elif i + 1 < len(lows):
                i += 1
            else:
                return c_low, c_high, s, False, walk
        else:
            if i + 1 < len(lows):
                i += 1
            elif j + 1 < len(highs):
                j += 1
            else:
                return c_low, c_high, s, False, walk


def np_reference(log_prob, old_log_prob, adv, mask, p):
    mask, _, _, A, raw, rho = np_inputs(log_prob, old_log_prob, adv, mask)
    c_low, c_high, s, met, walk = np_search(rho, A, mask, p)
    lo32, hi32 = float(np.float32(c_low)), float(np.float32(c_high))
    loss, grad, clip_low, clip_high, dual = np_clipped_loss(rho, raw, A, mask, lo32, hi32, p["clip_ratio_c"])
    shares = [np_share(rho, A, mask, lo, hi) for lo, hi in np_all_candidates(p)]
    return dict(mask=mask, A=A, raw=raw, rho=rho, c_low=c_low, c_high=c_high, share=s, met=met, walk=walk,
                shares=np.array(shares), share_start=shares[0], loss=loss, grad=grad,
                clip_low=clip_low, clip_high=clip_high, dual=dual)  # fmt: skip


def np_diagnostics(ref):
    n = max(int(ref["mask"].sum()), 1)
    return dict(
        c_low=ref["c_low"], c_high=ref["c_high"], pos_share=ref["share"], pos_share_start=ref["share_start"],
        target_met=float(ref["met"]), clip_frac_low=ref["clip_low"].sum() / n,
        clip_frac_high=ref["clip_high"].sum() / n, dual_clip_frac=ref["dual"].sum() / n,
    )  # fmt: skip


def bound_values(p):
    return np.array(sorted(set(np_steps(p["c_low_start"], p["c_low_max"], p["step_low"]))
                           | set(np_steps(p["c_high_start"], p["c_high_max"], p["step_high"]))
                           | {p["clip_ratio_c"]}))  # fmt: skip


def ambiguous_tokens(rho, p, rel=1e-5):
    b = bound_values(p)
    return np.any(np.abs(rho[..., None] - b) <= rel * b, axis=-1)


def knife_edge(shares, rho0, rel=1e-5):
    return bool(np.any(np.abs(np.asarray(shares) - rho0) <= rel))


# --------------------------------------------------------------------------------------
# Inputs and running the code under test
# --------------------------------------------------------------------------------------
def random_params(rng):
    if rng.random() < 0.3:
        return dict(DOC_DEFAULTS)
    lo_start = float(rng.uniform(0.3, 0.95))
    hi_start = float(rng.uniform(1.01, 2.0))
    return dict(
        rho0=float(rng.choice([0.5, 0.3, 0.7])) if rng.random() < 0.6 else float(rng.uniform(0.0, 1.0)),
        c_low_start=lo_start,
        c_low_max=lo_start if rng.random() < 0.1 else float(rng.uniform(lo_start, 0.99)),
        c_high_start=hi_start,
        c_high_max=hi_start if rng.random() < 0.1 else hi_start + float(rng.uniform(0.0, 4.0)),
        step_low=float(rng.choice([0.05, 0.1, 0.03, 0.2])),
        step_high=float(rng.choice([0.05, 0.1, 0.25, 0.07])),
        clip_ratio_c=float(rng.choice([3.0, 1.5, 10.0])),
        upper_first=bool(rng.random() < 0.3),
    )


def random_case(rng, shape, p, noise=None):
    """(lp, old, adv, mask) with no token at a bound and no share at rho0 (redrawn if so)."""
    for _ in range(50):
        B, T = shape
        old = np.log(rng.uniform(1e-5, 1.0, size=shape))
        scale = noise if noise is not None else float(rng.choice([0.1, 0.5, 1.5]))
        if rng.random() < 0.5:  # ratios spread over the whole search range: the bounds matter
            lp = old + np.log(rng.uniform(0.3, 4.0, size=shape))
        else:
            lp = old + scale * rng.standard_normal(shape)
        lp = np.where(rng.random(shape) < 0.1, old, lp)
        tilt = float(rng.uniform(-1.0, 1.5))  # from negative-heavy to positive-heavy batches
        if rng.integers(3) == 0:
            adv = np.repeat(rng.standard_normal((B, 1)) + tilt, T, axis=1)
        else:
            adv = (rng.standard_normal(shape) + tilt) * rng.choice([0.5, 1.0, 3.0, 30.0])
        adv = np.where(rng.random(shape) < 0.1, 0.0, adv)
        if rng.random() < 0.5:
            mask = np.arange(T)[None, :] < rng.integers(0, T + 1, size=B)[:, None]
        else:
            mask = rng.random(shape) < rng.uniform(0.3, 1.0)
        lp, old, adv = f32(lp), f32(old), f32(adv)
        rho = np.exp(np.clip(lp - old, -20, 20))
        mask = mask & ~ambiguous_tokens(rho, p)
        ref = np_reference(lp, old, adv, mask, p)
        if not knife_edge(ref["shares"], p["rho0"]):
            return lp, old, adv, mask
    raise AssertionError("could not draw an unambiguous case")


def run_torch(lp, old, adv, mask, p, dtype=torch.float32, grad=True, reduce_sum=None):
    lp_t = torch.tensor(np.asarray(lp), dtype=dtype, requires_grad=grad)
    old_t = torch.tensor(np.asarray(old), dtype=dtype)
    adv_t = torch.tensor(np.asarray(adv), dtype=dtype)
    inputs = prepare_inputs(lp_t, old_t, adv_t, torch.tensor(np.asarray(mask, bool)))
    params = p if isinstance(p, BAPOParams) else BAPOParams(**p)
    terms = bapo_terms(inputs, params) if reduce_sum is None else bapo_terms(inputs, params, reduce_sum)
    if grad:
        terms.loss_mat.sum().backward()
    return terms, lp_t, inputs


def check_against_reference(terms, lp_t, ref, params=None):
    """The choice (bounds, shares, target met), loss and clip flags agree with the reference, and
    with ``lp_t`` (after backward) the gradient; the loss and gradient are 0 where masked. With
    ``params``, first that no candidate's share sits within rounding of rho0 (the choice could
    then differ in float32)."""
    if params is not None:
        assert not knife_edge(ref["shares"], params["rho0"])
    assert float(terms.c_low) == pytest.approx(ref["c_low"], abs=1e-6)
    assert float(terms.c_high) == pytest.approx(ref["c_high"], abs=1e-6)
    assert bool(terms.target_met) == ref["met"]
    assert float(terms.pos_share) == pytest.approx(ref["share"], rel=1e-5, abs=1e-7)
    assert float(terms.pos_share_start) == pytest.approx(ref["share_start"], rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(np_(terms.candidate_shares), ref["shares"], rtol=1e-5, atol=1e-7)
    assert_clipped_terms_match(terms, lp_t, ref)


def end_state(ref):
    if not ref["met"]:
        return "never"
    if len(ref["walk"]) == 1:
        return "start"
    return "moved"


# --------------------------------------------------------------------------------------
# 1. Forward, gradient and the choice vs the reference, many seeds and shapes
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
def test_forward_gradient_and_choice_match_numpy(seed):
    rng = np.random.default_rng(seed)
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, p)
        terms, lp_t, _ = run_torch(lp, old, adv, mask, p)
        ref = np_reference(lp, old, adv, mask, p)
        for name in ("loss_mat", "log_ratio", "ratio", "clipped_low", "clipped_high", "dual_clipped"):
            assert getattr(terms, name).shape == shape
        for name in ("c_low", "c_high", "pos_share", "pos_share_start", "target_met"):
            assert getattr(terms, name).shape == ()
            assert not getattr(terms, name).requires_grad
        check_against_reference(terms, lp_t, ref)


def test_random_cases_reach_every_end_state():
    """The random cases above exercise all outcomes of the search (checked here, same generator)."""
    seen = {}
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        for shape in SHAPES:
            p = random_params(rng)
            lp, old, adv, mask = random_case(rng, shape, p)
            ref = np_reference(lp, old, adv, mask, p)
            state = end_state(ref)
            if state == "moved":
                lows = np_steps(p["c_low_start"], p["c_low_max"], p["step_low"])
                highs = np_steps(p["c_high_start"], p["c_high_max"], p["step_high"])
                moved_high, moved_low = ref["c_high"] != highs[0], ref["c_low"] != lows[0]
                if p.get("upper_first", True):  # c_high first, then c_low with c_high at its maximum
                    state += "_high" if moved_high and not moved_low else "_low" if ref["c_high"] == highs[-1] else ""
                else:  # c_low first, then c_high with c_low at its maximum
                    state += "_low" if moved_low and not moved_high else "_high" if ref["c_low"] == lows[-1] else ""
            seen[state] = seen.get(state, 0) + 1
    for state in ("start", "moved_low", "moved_high", "never"):
        assert seen.get(state, 0) >= 3, seen


@pytest.mark.parametrize("seed", SEEDS[:10])
def test_diagnostics_match_numpy(seed):
    rng = np.random.default_rng(70_000 + seed)
    for shape in SHAPES:
        p = random_params(rng)
        lp, old, adv, mask = random_case(rng, shape, p)
        terms, _, inputs = run_torch(lp, old, adv, mask, p, grad=False)
        d = {k: float(v) for k, v in bapo_diagnostics(terms, inputs.advantages, inputs.mask).items()}
        expected = np_diagnostics(np_reference(lp, old, adv, mask, p))
        assert set(d) == set(expected)
        for k, e in expected.items():
            assert d[k] == pytest.approx(e, rel=1e-5, abs=1e-6), k
        values = bapo_diagnostics(terms, inputs.advantages, inputs.mask).values()
        assert all(v.dtype == torch.float32 and v.shape == () for v in values)


# --------------------------------------------------------------------------------------
# 2. The search: hand-built end states, checked against the step-by-step loop
# --------------------------------------------------------------------------------------
def tokens(pairs):
    """(lp, old, adv, mask) for a single row of (ratio, advantage) pairs, q = 0.5."""
    rho = np.array([[r for r, _ in pairs]])
    adv = np.array([[a for _, a in pairs]], dtype=np.float64)
    old = np.full(rho.shape, math.log(0.5))
    return old + np.log(rho), old, adv, np.ones(rho.shape, bool)


def choose(pairs, **kw):
    p = dict(DOC_DEFAULTS, **kw)
    lp, old, adv, mask = tokens(pairs)
    terms, lp_t, _ = run_torch(lp, old, adv, mask, p)
    ref = np_reference(lp, old, adv, mask, p)
    check_against_reference(terms, lp_t, ref)
    pair = (round(float(terms.c_low), 6), round(float(terms.c_high), 6))
    return pair, float(terms.pos_share), bool(terms.target_met), ref


def test_target_met_at_the_start_bounds():
    (lo, hi), s, met, ref = choose([(1.0, 2.0), (1.1, 1.0), (0.9, -1.0), (0.72, -0.5)])
    assert (lo, hi) == (0.6, 1.2) and met and len(ref["walk"]) == 1
    assert s == pytest.approx(3.1 / (3.1 + 0.9 + 0.36), rel=1e-6)


def test_met_after_moving_the_lower_bound():
    # pos = 1 throughout; neg = 0.61 + 0.66 + 0.71 + 0.76 until c_low passes each of them
    pairs = [(1.0, 1.0), (0.61, -1.0), (0.66, -1.0), (0.71, -1.0), (0.76, -1.0)]
    (lo, hi), s, met, ref = choose(pairs, upper_first=False)
    assert (lo, hi) == (0.75, 1.2) and met
    assert s == pytest.approx(1 / 1.76, rel=1e-6)
    assert [round(w[0], 6) for w in ref["walk"]] == [0.6, 0.65, 0.7, 0.75]
    # the paper's order raises c_high first (useless here: no positive token is clipped)
    (lo, hi), s, met, _ = choose(pairs, upper_first=True)
    assert (lo, hi) == (0.75, 3.0) and met


def test_met_after_moving_both_bounds():
    # negatives at r = 0.95 are never filtered (c_low <= 0.9); positives at 1.33, 1.58 need c_high
    pairs = [(1.0, 1.0), (1.33, 1.0), (1.58, 1.0), (0.95, -1.0), (0.95, -1.0), (0.95, -1.0)]
    (lo, hi), s, met, ref = choose(pairs, upper_first=False)
    assert (lo, hi) == (0.9, 1.6) and met
    assert s == pytest.approx(3.91 / (3.91 + 2.85), rel=1e-6)
    assert len(ref["walk"]) == 7 + 8  # 7 lower-bound values, then 1.25 ... 1.6
    (lo, hi), s, met, _ = choose(pairs, upper_first=True)
    assert (lo, hi) == (0.6, 1.6) and met


def test_never_met_ends_at_both_maxima():
    (lo, hi), s, met, ref = choose([(1.0, 0.1), (0.95, -1.0), (1.2, -2.0), (5.0, 1.0)])
    assert (lo, hi) == (0.9, 3.0) and not met
    assert s == pytest.approx(0.1 / (0.1 + 0.95 + 2.4), rel=1e-6)  # r = 5 stays clipped at c_high = 3
    assert len(ref["walk"]) == 7 + 36


@pytest.mark.parametrize(
    "pairs",
    [
        [(1.0, 0.0), (0.5, 0.0), (2.0, 0.0)],  # all advantages zero
        [(4.0, 1.0), (5.0, 2.0)],  # only positives, all clipped beyond c_high_max
        [(0.1, -1.0), (0.2, -3.0)],  # only negatives, all below c_low_start: nothing passes a gradient
    ],
)
def test_no_contribution_keeps_the_start_bounds(pairs):
    (lo, hi), s, met, _ = choose(pairs)
    assert (lo, hi) == (0.6, 1.2) and s == 1.0 and met


def test_all_masked_and_empty_batches_keep_the_start_bounds():
    for shape in [(3, 5), (0, 7), (4, 0), (0, 0)]:
        for fill in (0.0, float("nan"), float("-inf")):
            values = np.full(shape, fill)
            terms, lp_t, inputs = run_torch(values, values, values, np.zeros(shape, bool), DOC_DEFAULTS)
            assert float(terms.c_low) == pytest.approx(0.6) and float(terms.c_high) == pytest.approx(1.2)
            assert float(terms.pos_share) == 1.0 and bool(terms.target_met)
            assert torch.all(terms.loss_mat == 0) and torch.all(lp_t.grad == 0)
            assert torch.isfinite(terms.candidate_shares).all()
            d = bapo_diagnostics(terms, inputs.advantages, inputs.mask)
            assert all(math.isfinite(float(x)) for x in d.values())


def test_rho0_extremes():
    pairs = [(1.0, 1.0), (0.72, -1.0), (0.95, -1.0)]
    (lo, hi), _, met, _ = choose(pairs, rho0=0.0)
    assert (lo, hi) == (0.6, 1.2) and met  # rho0 = 0: a fixed clip at the start bounds
    (lo, hi), s, met, _ = choose(pairs, rho0=1.0)
    assert (lo, hi) == (0.9, 3.0) and not met  # a negative token (r = 0.95) always passes
    (lo, hi), s, met, _ = choose([(1.0, 1.0), (0.72, -1.0)], rho0=1.0)
    # filtering the only negative reaches 1, once c_high has gone to its maximum (paper's order) ...
    assert (lo, hi) == (0.75, 3.0) and s == 1.0 and met
    (lo, hi), s, met, _ = choose([(1.0, 1.0), (0.72, -1.0)], rho0=1.0, upper_first=False)
    assert (lo, hi) == (0.75, 1.2) and s == 1.0 and met  # ... or at once (the port's order)


def test_statistic_counts_only_gradient_passing_tokens_not_clipped_ones_at_the_bound():
    """The paper's statistic, not the authors' port's: raising c_low must lower neg, not raise it.

    One positive token (|rA| = 1) and a negative one at r = 0.5 with A = -2.2. Ours: neg = 1.1
    at every c_low > 0.5, i.e. it is filtered from the start, share 1 → start bounds.
    The port counts the negative token at the bound: max(0.5, 0.6) * 2.2 = 1.32 > 1 → it would
    move (and raising c_low would make it worse).
    """
    (lo, hi), s, met, _ = choose([(1.0, 1.0), (0.5, -2.2)])
    assert (lo, hi) == (0.6, 1.2) and s == 1.0 and met


def test_only_the_micro_batch_matters_not_its_order():
    rng = np.random.default_rng(99)
    p = dict(DOC_DEFAULTS)
    lp, old, adv, mask = random_case(rng, (8, 40), p)
    terms, *_ = run_torch(lp, old, adv, mask, p, grad=False)
    perm = rng.permutation(8)
    terms_p, *_ = run_torch(lp[perm], old[perm], adv[perm], mask[perm], p, grad=False)
    assert float(terms.c_low) == float(terms_p.c_low) and float(terms.c_high) == float(terms_p.c_high)
    torch.testing.assert_close(terms.loss_mat[perm], terms_p.loss_mat)


def test_micro_batch_splits_change_the_bounds():
    """Documented non-invariance: each loss call (micro-batch) chooses its own bounds."""
    pairs_a = [(1.0, 1.0), (0.61, -1.0), (0.66, -1.0), (0.71, -1.0), (0.76, -1.0)]  # -> (0.75, 1.2)
    pairs_b = [(1.0, 3.0), (0.9, -1.0)]  # -> start bounds
    (ab_lo, ab_hi), *_ = choose(pairs_a + pairs_b, upper_first=False)
    (a_lo, a_hi), *_ = choose(pairs_a, upper_first=False)
    (b_lo, b_hi), *_ = choose(pairs_b, upper_first=False)
    assert (a_lo, a_hi) == (0.75, 1.2) and (b_lo, b_hi) == (0.6, 1.2)
    assert (ab_lo, ab_hi) == (0.6, 1.2)  # together: 4 / (4 + 0.9 + 2.74) >= 0.5 at the start


@pytest.mark.parametrize("upper_first", [True, False])
def test_ratios_exactly_at_a_bound_count_as_passing_a_gradient(upper_first):
    """pos counts r <= c_high and neg r >= c_low, bounds included: ratios at every float32 bound
    value and one ulp either side, fed to the search directly (exact float32 ratios)."""
    p = dict(DOC_DEFAULTS, upper_first=upper_first)
    grid = np.float32(bound_values(p))
    r = np.concatenate([grid, np.nextafter(grid, np.float32(0)), np.nextafter(grid, np.float32(10))])
    rng = np.random.default_rng(3)
    r = np.repeat(r, 2)
    A = np.where(np.arange(r.size) % 2 == 0, 1.0, -1.0) * rng.uniform(0.5, 2.0, r.size).astype(np.float32)
    choice = choose_bounds(torch.tensor(r), torch.tensor(A, dtype=torch.float32), BAPOParams(**p))
    r64, A64, mask = r.astype(np.float64), A.astype(np.float64), np.ones(r.size, bool)
    expected = [np_share(r64, A64, mask, lo, hi) for lo, hi in np_all_candidates(p)]
    np.testing.assert_allclose(np_(choice.candidate_shares), expected, rtol=1e-6)


# --------------------------------------------------------------------------------------
# 3. The one reduction
# --------------------------------------------------------------------------------------
def test_reduce_sum_is_called_once_on_one_vector():
    rng = np.random.default_rng(7)
    p = dict(DOC_DEFAULTS)
    lp, old, adv, mask = random_case(rng, (4, 30), p)
    calls = []

    def reduce_sum(t):
        calls.append((tuple(t.shape), t.requires_grad, t.dtype))
        return t

    terms, *_ = run_torch(lp, old, adv, mask, p, reduce_sum=reduce_sum)
    n_low, n_high = len(np_steps(0.6, 0.9, 0.05)), len(np_steps(1.2, 3.0, 0.05))
    assert (n_low, n_high) == (7, 37)
    assert calls == [((n_low + n_high,), False, torch.float32)]
    assert terms.candidate_shares.shape == (n_low + n_high - 1,)


def test_reduce_sum_result_drives_the_choice():
    """A fake 'other rank' holding more positive weight: the choice follows the reduced sums."""
    pairs = [(1.0, 1.0), (0.61, -1.0), (0.66, -1.0), (0.71, -1.0), (0.76, -1.0)]
    lp, old, adv, mask = tokens(pairs)
    other = [(1.0, 2.0)]  # 2 more units of positive weight, visible only through reduce_sum
    lp_o, old_o, adv_o, mask_o = tokens(other)
    _, _, inputs_o = run_torch(lp_o, old_o, adv_o, mask_o, DOC_DEFAULTS, grad=False)
    captured = {}

    def capture(t):
        captured["v"] = t.clone()
        return t

    bapo_terms(inputs_o, BAPOParams(**DOC_DEFAULTS), capture)
    terms, *_ = run_torch(lp, old, adv, mask, DOC_DEFAULTS, reduce_sum=lambda t: t + captured["v"])
    together = choose(pairs + other)
    assert (round(float(terms.c_low), 6), round(float(terms.c_high), 6)) == together[0] == (0.6, 1.2)
    assert float(terms.pos_share) == pytest.approx(together[1], rel=1e-6)


def _gloo_worker(rank, world_size, port, cases, results):
    """One data-parallel rank: its shard of every case, bounds chosen over the gloo group."""
    try:
        import torch.distributed as dist

        torch.set_num_threads(1)
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
            timeout=timedelta(seconds=30),
        )  # fmt: skip
        group = dist.new_group(list(range(world_size)))  # stands in for the data-parallel group
        out = []
        for lp, old, adv, mask, p, split in cases:
            rows = slice(0, split) if rank == 0 else slice(split, None)
            calls = []

            def reduce_sum(t, calls=calls):
                calls.append(1)
                t = t.clone()
                dist.all_reduce(t, group=group)
                return t

            terms, _, _ = run_torch(lp[rows], old[rows], adv[rows], mask[rows], p, grad=False, reduce_sum=reduce_sum)
            out.append(dict(
                c_low=float(terms.c_low), c_high=float(terms.c_high), share=float(terms.pos_share),
                met=bool(terms.target_met), shares=terms.candidate_shares.numpy(), loss=np_(terms.loss_mat),
                calls=len(calls),
            ))  # fmt: skip
        dist.destroy_process_group()
        results.put((rank, out))
    except BaseException as e:  # report instead of leaving the parent waiting
        results.put((rank, repr(e)))


def test_choice_is_the_same_on_one_and_two_gloo_ranks():
    import torch.multiprocessing as mp

    start = time.monotonic()
    rng = np.random.default_rng(2024)
    cases = []
    for i in range(8):
        p = random_params(rng) if i >= 2 else dict(DOC_DEFAULTS)
        B = int(rng.integers(2, 9))
        lp, old, adv, mask = random_case(rng, (B, 24), p)
        split = 0 if i == 1 else int(rng.integers(1, B))  # uneven shards; one rank empty in case 1
        cases.append((lp, old, adv, mask, p, split))
    # plus the hand-built 'moved' cases, split across the ranks
    for pairs in (
        [(1.0, 1.0), (0.61, -1.0), (0.66, -1.0), (0.71, -1.0), (0.76, -1.0)],
        [(1.0, 1.0), (1.33, 1.0), (1.58, 1.0), (0.95, -1.0), (0.95, -1.0), (0.95, -1.0)],
    ):
        lp, old, adv, mask = (x.reshape(-1, 1) for x in tokens(pairs))
        cases.append((lp, old, adv, mask, dict(DOC_DEFAULTS), 2))

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_gloo_worker, args=(rank, 2, port, cases, results), daemon=True) for rank in range(2)]
    for proc in procs:
        proc.start()
    got = {}
    try:
        for _ in procs:
            rank, out = results.get(timeout=60)
            got[rank] = out
    except queue_module.Empty:
        pytest.fail(f"gloo ranks did not answer within 60 s (got {sorted(got)})")
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
    for rank in (0, 1):
        assert not isinstance(got[rank], str), f"rank {rank} failed: {got[rank]}"

    for k, (lp, old, adv, mask, p, _split) in enumerate(cases):
        whole, *_ = run_torch(lp, old, adv, mask, p, grad=False)
        ref = np_reference(lp, old, adv, mask, p)
        r0, r1 = got[0][k], got[1][k]
        assert r0["calls"] == r1["calls"] == 1
        for r in (r0, r1):
            expected = (float(whole.c_low), float(whole.c_high), bool(whole.target_met))
            assert (r["c_low"], r["c_high"], r["met"]) == expected
            assert r["share"] == pytest.approx(float(whole.pos_share), rel=1e-5, abs=1e-7)
            np.testing.assert_allclose(r["shares"], np_(whole.candidate_shares), rtol=1e-5, atol=1e-7)
        assert (r0["c_low"], r0["c_high"]) == pytest.approx((ref["c_low"], ref["c_high"]), abs=1e-6)
        # with the same bounds, each rank's loss rows are those of the single-process loss
        np.testing.assert_allclose(np.concatenate([r0["loss"], r1["loss"]]), np_(whole.loss_mat), rtol=1e-6, atol=1e-30)
    elapsed = time.monotonic() - start
    assert elapsed < 60, elapsed


# --------------------------------------------------------------------------------------
# 4. Hypothesis: finite, consistent and right for arbitrary inputs and valid parameters
# --------------------------------------------------------------------------------------
@st.composite
def valid_params(draw):
    lo = draw(st.floats(0.01, 0.99))
    hi = draw(st.floats(1.001, 10.0))
    lo_max = draw(st.floats(lo, 0.999))
    hi_max = draw(st.floats(hi, hi + 20.0))
    return dict(
        rho0=draw(st.floats(0.0, 1.0)), c_low_start=lo, c_low_max=lo_max, c_high_start=hi, c_high_max=hi_max,
        step_low=max(draw(st.floats(0.001, 0.5)), (lo_max - lo) / 999),
        step_high=max(draw(st.floats(0.001, 2.0)), (hi_max - hi) / 999),
        clip_ratio_c=draw(st.floats(1.001, 100.0)), upper_first=draw(st.booleans()),
    )  # fmt: skip


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=loss_inputs(), p=valid_params())
def test_hypothesis_finite_consistent_and_right(inputs, p):
    lp, old, adv, mask = inputs
    terms, lp_t, inputs_t = run_torch(lp, old, adv, mask, p)
    loss, grad, shares = np_(terms.loss_mat), np_(lp_t.grad), np_(terms.candidate_shares)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad)) and np.all(np.isfinite(shares))
    assert np.all((shares >= 0) & (shares <= 1))
    assert np.all(loss[~mask] == 0) and np.all(grad[~mask] == 0)
    d = bapo_diagnostics(terms, inputs_t.advantages, inputs_t.mask)
    assert all(math.isfinite(float(x)) for x in d.values())
    # the choice is the first candidate meeting rho0 (by the code's own shares), else the maxima
    pairs = np_all_candidates(p)
    assert len(pairs) == len(shares)
    met = shares >= np.float32(p["rho0"])
    k = int(np.argmax(met)) if met.any() else len(pairs) - 1
    assert float(terms.c_low) == pytest.approx(pairs[k][0], abs=1e-6)
    assert float(terms.c_high) == pytest.approx(pairs[k][1], abs=1e-6)
    assert bool(terms.target_met) == bool(met.any())
    assert float(terms.pos_share) == shares[k] and float(terms.pos_share_start) == shares[0]
    # and the reference agrees wherever no token sits at a bound and no share at rho0
    rho = np.exp(np.clip(np.where(mask, lp - old, 0.0), -20, 20))
    keep = mask & ~ambiguous_tokens(rho, p, rel=1e-4)
    if np.array_equal(keep, mask):
        ref = np_reference(lp, old, adv, mask, p)
        np.testing.assert_allclose(shares, ref["shares"], rtol=1e-4, atol=1e-6)
        if not knife_edge(ref["shares"], p["rho0"], rel=1e-4):
            check_against_reference(terms, lp_t, ref)


# --------------------------------------------------------------------------------------
# 5. Params and spec (ranges and boundaries: the loss contract, tests/test_losses.py)
# --------------------------------------------------------------------------------------
def test_defaults_and_spec():
    p = BAPOParams()
    for k, v in DOC_DEFAULTS.items():
        assert getattr(p, k) == v, k
    assert p.upper_first is True  # the paper's Algorithm 1 order
    assert LOSS.name == "bapo" and LOSS.params is BAPOParams and LOSS.terms is bapo_terms
    assert LOSS.diagnostics is bapo_diagnostics and LOSS.config_class_name == "BAPOPolicyLossConfig"
    assert LOSS.actor_keys == ("clip_ratio_c",)


def test_the_order_is_a_flag_and_fixed_bounds_are_a_single_candidate():
    with pytest.raises(ValueError, match="upper_first"):
        BAPOParams(upper_first=1)
    p = BAPOParams(c_low_max=0.6, c_high_max=1.2)
    lp, old, adv, mask = tokens([(1.0, 1.0), (0.9, -5.0)])
    terms, *_ = run_torch(lp, old, adv, mask, p, grad=False)
    assert terms.candidate_shares.shape == (1,) and not bool(terms.target_met)
    assert float(terms.c_low) == pytest.approx(0.6) and float(terms.c_high) == pytest.approx(1.2)


# The reference, as the loss contract (tests/test_losses.py) runs it: the edge cases, compilation
REFERENCE = LossReference(
    spec=LOSS,
    defaults=dict(DOC_DEFAULTS),
    draw=lambda rng, shape, noise: random_case(rng, shape, DOC_DEFAULTS),  # its own spread of ratios
    reference=np_reference,
    check=check_against_reference,
    diagnostics=np_diagnostics,
    ambiguous=lambda ref, p: ambiguous_tokens(ref["rho"], p),
    acted=lambda terms: terms.clipped_low | terms.clipped_high | terms.dual_clipped,
    out_of_range=(
        (dict(rho0=-0.1), "rho0", "[0, 1]"),
        (dict(rho0=1.5), "rho0", "[0, 1]"),
        (dict(c_low_start=0.0), "c_low_start", "(0, 1)"),
        (dict(c_low_start=1.0, c_low_max=1.0), "c_low_start", "(0, 1)"),
        (dict(c_low_max=0.5), "c_low_max", "[c_low_start, 1)"),
        (dict(c_low_max=1.0), "c_low_max", "[c_low_start, 1)"),
        (dict(c_high_start=1.0), "c_high_start", "> 1"),
        (dict(c_high_start=0.9), "c_high_start", "> 1"),
        (dict(c_high_max=1.1), "c_high_max", ">= c_high_start"),
        (dict(step_low=0.0), "step_low", "> 0"),
        (dict(step_low=-0.05), "step_low", "> 0"),
        (dict(step_low=1e-6), "step_low", "at least"),
        (dict(step_high=0.0), "step_high", "> 0"),
        (dict(step_high=1e-7), "step_high", "at least"),
        (dict(clip_ratio_c=1.0), "clip_ratio_c", "> 1"),
    ),
    boundaries=(
        dict(rho0=0.0, c_low_max=0.6, c_high_max=1.2),  # fixed bounds: a single candidate
        dict(rho0=1.0, c_low_start=0.001, c_low_max=0.999, step_low=0.001, c_high_start=1.0001),
    ),
)
