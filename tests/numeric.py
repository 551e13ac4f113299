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
