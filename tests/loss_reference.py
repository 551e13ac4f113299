"""What the loss contract (tests/test_losses.py) needs of each loss's independent reference.

Each tests/test_<loss>_math.py keeps its own formulas (a float64 NumPy reference written from the
paper) and hands them to the contract as `REFERENCE = LossReference(...)`; the contract's cases
(all tokens masked, non-finite values where masked, half precision, large advantages and log-ratios,
zero advantages, settings out of range) are written once and run on every declared loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from maspo_verl.algos.common import LossSpec, prepare_inputs


@dataclass(frozen=True)
class LossReference:
    spec: LossSpec  # the declaration under test
    defaults: dict  # the paper's defaults (tests/expected.py)
    # (rng, shape, noise) -> (log_prob, old_log_prob, advantages, mask): float32 values as float64,
    # with the defaults, tokens the float32 code could classify otherwise left out of the mask
    draw: Callable
    # (log_prob, old_log_prob, advantages, mask, params) -> dict with at least "mask", "A" (advantages,
    # 0 where masked), "rho", "loss" and "grad" (d loss / d log_prob), in float64
    reference: Callable
    # (terms, log_prob tensor after backward or None, reference dict, params): assert the terms agree
    check: Callable
    # (reference dict) -> {diagnostic: value, or None where any finite value will do}
    diagnostics: Callable
    # (reference dict, params) -> bool array: tokens within float32 rounding of a threshold
    ambiguous: Callable
    # terms -> bool tensor: tokens where the loss's trust region acted (clipped, gated, damped)
    acted: Callable
    # (kwargs, key, allowed): refused, naming key=value and the allowed range
    out_of_range: tuple
    # kwargs at the edges of the allowed ranges: accepted as given
    boundaries: tuple
    # parameter sets besides the defaults that the extreme inputs also run with
    variants: tuple = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def parameter_sets(self) -> list[dict]:
        return [dict(self.defaults), *(dict(self.defaults, **variant) for variant in self.variants)]


def run_terms(spec: LossSpec, lp, old, adv, mask, params: dict, dtype=torch.float32, grad: bool = True):
    """The loss's pure terms as the adapter runs them (prepare_inputs, then `spec.terms`), with the
    gradient of the summed loss. Returns (terms, log_prob tensor, inputs)."""
    lp_t = torch.tensor(np.asarray(lp), dtype=dtype, requires_grad=grad)
    old_t = torch.tensor(np.asarray(old), dtype=dtype)
    adv_t = torch.tensor(np.asarray(adv), dtype=dtype)
    inputs = prepare_inputs(lp_t, old_t, adv_t, torch.tensor(np.asarray(mask, bool)))
    terms = spec.terms(inputs, spec.params(**params))
    if grad:
        terms.loss_mat.sum().backward()
    return terms, lp_t, inputs
