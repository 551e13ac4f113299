"""Comparing torch results with the float64 NumPy references of the math tests."""

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def assert_grad_matches(got: np.ndarray, want: np.ndarray, scale: np.ndarray, rtol: float = 1e-5):
    """Gradients agree to float32 accuracy; `scale` (|A| * rho) bounds each entry's magnitude."""
    tol = rtol * np.abs(want) + 1e-6 * scale + 1e-30
    bad = ~(np.abs(got - want) <= tol)
    assert not bad.any(), f"{bad.sum()} gradient entries differ: got {got[bad][:5]}, want {want[bad][:5]}"


def np_inputs(log_prob, old_log_prob, advantages, mask):
    """A reference's inputs in float64, zero where masked (padding may hold anything, NaN included):
    (mask, log_prob, old_log_prob, advantages, raw log-ratio, rho = exp(clip(raw, -20, 20)))."""
    mask = np.asarray(mask, dtype=bool)
    lp, old, adv = (np.where(mask, np.asarray(x, np.float64), 0.0) for x in (log_prob, old_log_prob, advantages))
    raw = lp - old
    return mask, lp, old, adv, raw, np.exp(np.clip(raw, -20.0, 20.0))


def np_clipped_loss(rho, raw, A, mask, low, high, c):
    """PPO's clipped surrogate with the dual clip for A < 0, from its formula:
    loss = -min(rho A, clip(rho, low, high) A), then for A < 0 min(loss, -A c); the gradient
    -A rho where the unclipped branch is the active one (and inside the ratio's clamp), else 0.
    Returns (loss, grad, clipped below, clipped above, dual-clipped) per token."""
    obj_plain = rho * A
    obj_clip = np.clip(rho, low, high) * A
    clip_active = obj_clip < obj_plain  # the min picks the clipped (constant) branch
    loss = -np.minimum(obj_plain, obj_clip)
    dual = (A < 0) & (loss > -A * c)
    loss = np.where(mask, np.where(dual, -A * c, loss), 0.0)
    grad = np.where(mask & (np.abs(raw) < 20) & ~clip_active & ~dual, -A * rho, 0.0)
    return loss, grad, mask & clip_active & (rho < low), mask & clip_active & (rho > high), mask & dual


def assert_masked_grad_matches(lp_t, ref: dict, scale: np.ndarray, rtol: float = 1e-5):
    """With ``lp_t`` (after backward; None skips): its gradient matches the reference's, 0 where masked."""
    if lp_t is None:
        return
    grad = np_(lp_t.grad)
    assert_grad_matches(grad, ref["grad"], scale, rtol)
    assert np.all(grad[~ref["mask"]] == 0)


def assert_clipped_terms_match(terms, lp_t, ref: dict):
    """A clipped surrogate's loss, clip flags and gradient against `np_clipped_loss`'s."""
    v = ref["mask"]
    np.testing.assert_allclose(np_(terms.loss_mat), ref["loss"], rtol=1e-5, atol=1e-30)
    assert np.all(np_(terms.loss_mat)[~v] == 0)
    np.testing.assert_array_equal(terms.clipped_low.numpy() & v, ref["clip_low"])
    np.testing.assert_array_equal(terms.clipped_high.numpy() & v, ref["clip_high"])
    np.testing.assert_array_equal(terms.dual_clipped.numpy() & v, ref["dual"])
    assert_masked_grad_matches(lp_t, ref, np.abs(ref["A"]) * np.maximum(ref["rho"], 1.0))


def f32(x) -> np.ndarray:
    """Round to float32 and back: the values a float32 run actually sees."""
    return np.asarray(x, np.float64).astype(np.float32).astype(np.float64)


@st.composite
def loss_inputs(draw):
    """(log_prob, old_log_prob, advantages, mask) over wide ranges: log-ratios past +-20, |A| to 1e3."""
    shape = draw(st.tuples(st.integers(1, 4), st.integers(1, 8)))

    def arrays(low, high):
        return hnp.arrays(np.float64, shape, elements=st.floats(low, high, width=32))

    log_ratio, old, adv = draw(arrays(-60, 60)), draw(arrays(-300, 0)), draw(arrays(-1e3, 1e3))
    mask = draw(hnp.arrays(np.bool_, shape))
    return f32(old + log_ratio), old, adv, mask
