"""DAC: the dynamic adaptive clipping of DCPO (arXiv 2509.02333), in plain torch.

DCPO ("Dynamic Clipping Policy Optimization") makes PPO's clip range depend on how probable
the sampled token was. Its argument: a fixed ratio range [1 - eps, 1 + eps] allows a
high-probability token to move a lot of probability mass but a rare token almost none, so
rare tokens (where exploration happens) are clipped first. DCPO's bounds instead solve
r * |r - 1| * q = eps (eps_low below 1, eps_high above 1, taking the root nearest 1), which
gives, per token with q = pi_old(token) = exp(old_log_prob) (no gradient):

    r_low(q)  = 0.5 + 0.5 * sqrt(max(1 - 4 * eps_low / q, 0))
    r_high(q) = min(0.5 + 0.5 * sqrt(1 + 4 * eps_high / q),  max(clip_ratio_c, 10))

and then the usual clipped surrogate, with rho = exp(clamp(log_prob - old_log_prob, -20, 20))
(with gradient) and A the advantage (no gradient):

    l = -min(rho * A, clip(rho, r_low, r_high) * A)
    l = min(l, -A * clip_ratio_c)        for A < 0 (verl's dual clip, as DCPO's code keeps it)

Properties of the bounds: r_low rises from 0.5 (every q <= 4 eps_low) towards
0.5 + 0.5 sqrt(1 - 4 eps_low) as q -> 1 (0.8 at the default 0.16); r_high falls from the cap
(q -> 0) to 0.5 + 0.5 sqrt(1 + 4 eps_high) at q = 1 (1.1708 at the default 0.2). At q = 1 DAC
is close to a PPO clip of [0.8, 1.17]; the rarer the token, the wider the region, up to
[0.5, cap]. Only the clipping component of DCPO is implemented here (not its smooth advantage
standardisation nor its OTM loss aggregation), which is the "DAC" baseline of the MASPO paper.

Numerics. 4 eps / q is formed in log space, exp(log(4 eps) - old_log_prob) (expm1 for the
lower bound, whose square root magnifies cancellation next to q = 4 eps_low); it is inf when q
is far below float32's range, which gives exactly the limits r_low = 0.5 and r_high = cap,
never NaN (eps > 0 is enforced, so log(4 eps) is finite). Masked
positions arrive sanitised (old_log_prob = 0, so q = 1). The bounds carry no gradient.

Where this differs from DCPO's released verl code (``get_clip_low_high`` in their
``core_algos.py``, loss_mode "dcpo" with clip_type "dynamic"): their code sets the lower bound
to 1 (not its limit 0.5) when q underflows to exactly 0, and it does not clamp the log-ratio;
here the bound follows the formula's limit and the log-ratio is clamped at +-20 like every loss
of this project (and verl's own). The cap max(clip_ratio_c, 10) and the dual clip are theirs.

This module imports torch only (no verl); ``maspo_verl.losses`` wires it into verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .common import LossInputs, LossSpec, Params, count_true, identity_sum, importance_ratio

# DCPO's code never lets the upper bound's cap fall below this (their comment: "at least 10").
MIN_HIGH_CAP = 10.0


@dataclass
class DACParams(Params):
    """DAC's hyperparameters, with DCPO's defaults (eps_low 0.16, eps_high 0.2).

    eps_low is limited to (0, 0.25]: 1 - 4 eps_low / q is negative for every q <= 1 once
    eps_low exceeds 0.25, so every larger value gives the same constant r_low = 0.5 (a value
    like 0.28, PPO's clip-higher eps, would be silently meaningless); eps_low = 0 gives
    r_low = 1 everywhere, a region of zero width below 1 (and 0 * (1/q = inf) is NaN).
    eps_high only needs to be > 0. clip_ratio_c is verl's actor key (dual clip for A < 0, and
    the upper bound's cap max(clip_ratio_c, 10)); verl itself requires it > 1.
    """

    eps_low: float = 0.16
    eps_high: float = 0.2
    clip_ratio_c: float = 3.0

    LABEL = "DAC"
    RULES = (
        ("eps_low", lambda p, v: 0 < v <= 0.25, "in (0, 0.25] (beyond 0.25 the lower bound is 0.5 for every token)"),
        ("eps_high", lambda p, v: v > 0, "> 0"),
        ("clip_ratio_c", lambda p, v: v > 1, "> 1 (verl's dual-clip bound)"),
    )

    @property
    def high_cap(self) -> float:
        return max(float(self.clip_ratio_c), MIN_HIGH_CAP)


class DACTerms(NamedTuple):
    """Per-token intermediates of one DAC loss evaluation, all (batch, response_len)."""

    loss_mat: torch.Tensor  # clipped surrogate with dual clip, 0 at masked positions
    log_ratio: torch.Tensor  # clamped log(pi_theta / pi_old), with gradient
    ratio: torch.Tensor  # rho, with gradient
    bound_low: torch.Tensor  # r_low(q), detached
    bound_high: torch.Tensor  # r_high(q), capped, detached
    clipped_low: torch.Tensor  # bool: the min picks the clipped branch at r_low (A < 0, rho < r_low)
    clipped_high: torch.Tensor  # bool: the min picks the clipped branch at r_high (A > 0, rho > r_high)
    dual_clipped: torch.Tensor  # bool: A < 0 and the dual clip -A * clip_ratio_c takes effect


def dac_bounds(old_log_prob: torch.Tensor, params: DACParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_low, r_high) per token from q = exp(old_log_prob); see the module docstring.

    Works in log space: 4 eps / q = exp(log(4 eps) - old_log_prob), inf when q is below
    float32's range, which the formulas map to their limits (0.5 and the cap) without NaN.
    """
    old = old_log_prob.detach()
    # 1 - 4 eps_low / q = -expm1(log(4 eps_low) - log q): keeps its precision next to the
    # threshold q = 4 eps_low, where the square root magnifies any cancellation error.
    low_arg = torch.expm1(torch.sub(math.log(4.0 * params.eps_low), old)).neg_()
    low = low_arg.clamp_min_(0.0).sqrt_().mul_(0.5).add_(0.5)
    high = torch.exp(torch.sub(math.log(4.0 * params.eps_high), old)).add_(1.0).sqrt_().mul_(0.5).add_(0.5)
    return low, high.clamp_max_(params.high_cap)


def clipped_surrogate(ratio, advantages, bound_low, bound_high, clip_ratio_c):
    """verl's clipped surrogate with dual clip, for any bounds (tensors that broadcast).

    -min(rho A, clip(rho, lo, hi) A) is -A min(rho, hi) for A > 0 and -A max(rho, lo) for
    A < 0 (given lo <= 1 <= hi); verl's dual clip min(., -A c) for A < 0 makes the latter
    -A clamp(rho, lo, c). So the loss is -A clamp(rho, L, U) with per-token bounds (L, U) =
    (0, hi) for A > 0 and (lo, c) otherwise: one clamp, through which the gradient flows where
    rho lies inside its bounds, limits included, as the min/max form gives it there.

    Returns (loss_mat, clipped_low, clipped_high, dual_clipped); the flags say where the
    min over the two objectives picks the clipped branch (A < 0 below the lower bound, A > 0
    above the upper one) and where the dual clip takes effect (A < 0 and rho > clip_ratio_c,
    given bound_low < 1 < clip_ratio_c). They are read from rho and the sign of A rather than
    by comparing the two products, which tie when A * rho underflows. Shared by DAC and BAPO,
    which only differ in their bounds.
    """
    adv = advantages
    positive = adv > 0
    lower = torch.where(positive, 0.0, bound_low)
    upper = torch.where(positive, bound_high, clip_ratio_c)
    loss_mat = ratio.clamp(lower, upper) * adv.neg()

    r = ratio.detach()
    negative = adv < 0
    clipped_low = negative & (r < bound_low)
    clipped_high = positive & (r > bound_high)
    dual_clipped = negative & (r > clip_ratio_c)
    return loss_mat, clipped_low, clipped_high, dual_clipped


def dac_terms(inputs: LossInputs, params: DACParams, reduce_sum=identity_sum) -> DACTerms:
    """DAC's per-token loss and its intermediates (pure, compilable; no cross-token statistic,
    so ``reduce_sum`` is unused)."""
    log_ratio, ratio = importance_ratio(inputs)
    bound_low, bound_high = dac_bounds(inputs.old_log_prob, params)
    loss_mat, clipped_low, clipped_high, dual_clipped = clipped_surrogate(
        ratio, inputs.advantages, bound_low, bound_high, params.clip_ratio_c
    )
    return DACTerms(loss_mat, log_ratio, ratio, bound_low, bound_high, clipped_low, clipped_high, dual_clipped)


def dac_diagnostics(terms: DACTerms, advantages: torch.Tensor, response_mask: torch.Tensor) -> dict:
    """Clip shares (each side and dual clip) and mean bounds over valid tokens, as 0-d tensors.

    clip_frac_low + clip_frac_high is what verl's vanilla loss reports as pg_clipfrac (the
    share of tokens whose clipped branch is active); dual_clip_frac is its pg_clipfrac_lower.
    The clip flags need A != 0, so they are false where masked (the terms saw A = 0 there).
    """
    mask = response_mask.bool()
    per_valid = 1.0 / count_true(mask).clamp_min(1)
    return {
        "clip_frac_low": count_true(terms.clipped_low) * per_valid,
        "clip_frac_high": count_true(terms.clipped_high) * per_valid,
        "dual_clip_frac": count_true(terms.dual_clipped) * per_valid,
        # the bounds are finite everywhere, so a product masks them
        "bound_low_mean": (terms.bound_low * mask).sum() * per_valid,
        "bound_high_mean": (terms.bound_high * mask).sum() * per_valid,
    }


LOSS = LossSpec(
    name="dac",
    params=DACParams,
    terms=dac_terms,
    diagnostics=dac_diagnostics,
    config_class_name="DACPolicyLossConfig",
    summary="DCPO's probability-dependent clip bounds (rare tokens get a wider ratio range), dual clip for A<0",
    actor_keys=("clip_ratio_c",),
)
