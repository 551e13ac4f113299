"""Comparing torch results with the float64 NumPy references of the math tests."""

import numpy as np
import torch


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def assert_grad_matches(got: np.ndarray, want: np.ndarray, scale: np.ndarray, rtol: float = 1e-5):
    """Gradients agree to float32 accuracy; `scale` (|A| * rho) bounds each entry's magnitude."""
    tol = rtol * np.abs(want) + 1e-6 * scale + 1e-30
    bad = ~(np.abs(got - want) <= tol)
    assert not bad.any(), f"{bad.sum()} gradient entries differ: got {got[bad][:5]}, want {want[bad][:5]}"
