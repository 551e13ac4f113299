"""MASPO: Mass-Adaptive Soft Policy Optimization (arXiv 2602.17550), in plain torch.

MASPO replaces the hard PPO clip of GRPO-style RLVR with three pieces. Per response token,
with q = pi_old(token) (no gradient), rho = pi_theta / pi_old (with gradient), r = sg(rho)
and A the GRPO advantage (no gradient):

1. Soft Gaussian gate, only in the two aggressive quadrants:
       g = exp(-(r - 1)^2 / (2 sigma^2))   if A > 0 and r > 1   (sigma = sigma_pos)
                                           or A < 0 and r < 1   (sigma = sigma_neg)
       g = 1                               otherwise (conservative moves are never damped)
2. Mass-adaptive limiter:  m = clamp(sigma_base / q^alpha, sigma_base, sigma_high)
3. Asymmetric risk controller:
       sigma_pos = m * clamp(1 + beta_pos * A,       adv_low, adv_high)   (A > 0)
       sigma_neg = m * clamp(1 / (1 - beta_neg * A), adv_low, adv_high)   (A < 0)

Per-token loss:  l = -A * sg(g) * rho,  so  grad l = -A * g * rho * grad log pi.
No min(), no clip, no dual clip. The gate is detached on purpose: differentiating through it
is a different algorithm whose gradient changes sign for large rho.

Ablations (the paper's): alpha = 0 removes the mass-adaptive limiter, beta_pos = beta_neg = 0
the risk controller, and ``two_sided=True`` gates all four quadrants (reported unstable).

This module imports torch only (no verl), so the formulas can be read, tested and reused
on their own; `maspo_verl.losses` wires them into verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from .common import (
    PPO_CLIP_FOR_METRICS,
    LossInputs,
    LossSpec,
    Params,
    check_finite_where_valid,
    flag_rule,
    identity_sum,
    importance_ratio,
    masked_mean,
    prepare_inputs,
    share,
)


@dataclass
class MASPOParams(Params):
    """The seven MASPO hyperparameters, with the authors' defaults, and the ablation switch.

    Validated on construction: a bad value raises ValueError naming the key, the value and
    the allowed range. ``two_sided`` gates all four quadrants (a SAPO-like two-sided gate, an
    ablation the paper reports as unstable); MASPO itself gates only the aggressive two.
    """

    sigma_base: float = 1.0
    alpha: float = 0.3
    beta_pos: float = 0.03
    beta_neg: float = 0.03
    sigma_high: float = 10.0
    adv_low: float = 0.1
    adv_high: float = 10.0
    two_sided: bool = False

    LABEL = "MASPO"
    RULES = (
        ("sigma_base", lambda p, v: v > 0, "> 0"),
        ("alpha", lambda p, v: v >= 0, ">= 0 (0 turns the mass-adaptive limiter off)"),
        ("beta_pos", lambda p, v: v >= 0, ">= 0 (0 turns the risk controller off)"),
        ("beta_neg", lambda p, v: v >= 0, ">= 0 (0 turns the risk controller off)"),
        ("sigma_high", lambda p, v: v >= p.sigma_base, ">= sigma_base (sigma_base = {sigma_base})"),
        ("adv_low", lambda p, v: 0 < v <= 1, "in (0, 1]"),
        ("adv_high", lambda p, v: v >= 1, ">= 1"),
        flag_rule("two_sided"),
    )


class MASPOTerms(NamedTuple):
    """Per-token intermediates of one MASPO loss evaluation, all (batch, response_len)."""

    loss_mat: torch.Tensor  # -A * sg(g) * rho, 0 at masked positions
    log_ratio: torch.Tensor  # clamped log(pi_theta / pi_old), with gradient
    ratio: torch.Tensor  # rho, with gradient
    gate: torch.Tensor  # g in (0, 1], detached
    gate_pos: torch.Tensor  # bool: A > 0 and r > 1
    gate_neg: torch.Tensor  # bool: A < 0 and r < 1
    sigma_pos: torch.Tensor  # trust-region width for A > 0 (meaningful where A > 0)
    sigma_neg: torch.Tensor  # trust-region width for A < 0 (meaningful where A < 0)


def mass_adaptive_sigma(old_log_prob: torch.Tensor, params: MASPOParams) -> torch.Tensor:
    """m = clamp(sigma_base / q^alpha, sigma_base, sigma_high), computed in log space.

    sigma_base / q^alpha = exp(log sigma_base - alpha * log q): no division by a tiny q.
    """
    log_m = math.log(params.sigma_base) - params.alpha * old_log_prob
    return torch.exp(log_m.clamp(math.log(params.sigma_base), math.log(params.sigma_high)))


def risk_factors(advantages: torch.Tensor, params: MASPOParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(pos, neg) risk factors: clamp(1 + beta_pos A) for A > 0, clamp(1 / (1 - beta_neg A)) for A < 0.

    Each branch only sees advantages of its own sign (the other side is set to 0, which gives
    a factor of 1), so 1 - beta_neg * A >= 1 and the division is always safe.
    """
    adv_pos = advantages.clamp(min=0)
    adv_neg = advantages.clamp(max=0)
    pos = (1 + params.beta_pos * adv_pos).clamp(params.adv_low, params.adv_high)
    neg = (1 / (1 - params.beta_neg * adv_neg)).clamp(params.adv_low, params.adv_high)
    return pos, neg


def trust_region_sigmas(
    old_log_prob: torch.Tensor, advantages: torch.Tensor, params: MASPOParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_pos, sigma_neg): the mass-adaptive width times each side's risk factor."""
    mass = mass_adaptive_sigma(old_log_prob, params)
    risk_pos, risk_neg = risk_factors(advantages, params)
    return mass * risk_pos, mass * risk_neg


def soft_gate(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    sigma_pos: torch.Tensor,
    sigma_neg: torch.Tensor,
    two_sided: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unilateral Gaussian gate on the detached ratio; returns (gate, gate_pos, gate_neg).

    Takes log(r) so that r - 1 = expm1(log r) keeps its precision next to r = 1. The gate is
    floored at the dtype's smallest normal number: exp() underflows to 0 for ratios far
    outside the region, and MASPO promises a damped, never a zero, gradient. With
    ``two_sided`` (the ablation) the conservative quadrants are gated too.
    """
    log_r = log_ratio.detach()
    moved_up = log_r != 0 if two_sided else log_r > 0
    moved_down = log_r != 0 if two_sided else log_r < 0
    gate_pos = (advantages > 0) & moved_up
    gate_neg = (advantages < 0) & moved_down
    sigma = torch.where(advantages > 0, sigma_pos, sigma_neg)
    gaussian = torch.exp(-(torch.expm1(log_r) ** 2) / (2 * sigma**2)).clamp_min(torch.finfo(log_r.dtype).tiny)
    gate = torch.where(gate_pos | gate_neg, gaussian, torch.ones_like(log_r))
    return gate, gate_pos, gate_neg


def maspo_terms(inputs: LossInputs, params: MASPOParams, reduce_sum=identity_sum) -> MASPOTerms:
    """MASPO's per-token loss -A * sg(g) * rho and its intermediates (pure, compilable)."""
    log_ratio, ratio = importance_ratio(inputs)
    sigma_pos, sigma_neg = trust_region_sigmas(inputs.old_log_prob, inputs.advantages, params)
    gate, gate_pos, gate_neg = soft_gate(log_ratio, inputs.advantages, sigma_pos, sigma_neg, params.two_sided)
    loss_mat = -inputs.advantages * gate * ratio
    return MASPOTerms(loss_mat, log_ratio, ratio, gate, gate_pos, gate_neg, sigma_pos, sigma_neg)


def maspo_token_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: MASPOParams,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> MASPOTerms:
    """MASPO's per-token loss for direct callers: inputs checked, then ``maspo_terms``.

    Inputs are (batch, response_len). Padded positions (response_mask False) may hold
    anything, -inf and NaN included: they are replaced by zeros before any arithmetic, so
    they reach neither the loss nor the gradient. A non-finite value at a valid position is
    bad data and raises ValueError rather than turning into a NaN loss.
    """
    mask = response_mask.bool()
    check_finite_where_valid(
        mask, "MASPO", log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages,
        rollout_is_weights=rollout_is_weights,
    )  # fmt: skip
    terms = maspo_terms(prepare_inputs(log_prob, old_log_prob, advantages, mask), params)
    if rollout_is_weights is None:
        return terms
    weights = torch.where(mask, rollout_is_weights.detach().float(), 0.0)
    return terms._replace(loss_mat=terms.loss_mat * weights)


def maspo_diagnostics(terms: MASPOTerms, advantages: torch.Tensor, response_mask: torch.Tensor) -> dict:
    """Per-batch gate and trust-region statistics over valid tokens, as 0-d tensors.

    gate_mean is over gated tokens only (1.0 when none is gated: nothing was damped);
    clip_frac_ppo is the share of tokens a PPO clip at 0.2 would have zeroed, comparable
    with GRPO's actor/pg_clipfrac.
    """
    mask = response_mask.bool()
    r = terms.ratio.detach()
    pos = (advantages > 0) & mask
    neg = (advantages < 0) & mask
    gated = (terms.gate_pos | terms.gate_neg) & mask
    would_clip = (pos & (r > 1 + PPO_CLIP_FOR_METRICS)) | (neg & (r < 1 - PPO_CLIP_FOR_METRICS))
    return {
        "gate_mean": masked_mean(terms.gate, gated, empty=torch.ones((), device=r.device)),
        "gated_frac_pos": share(terms.gate_pos, mask),
        "gated_frac_neg": share(terms.gate_neg, mask),
        "gate_below_half_frac": share(terms.gate < 0.5, mask),
        "sigma_pos_mean": masked_mean(terms.sigma_pos, pos),
        "sigma_neg_mean": masked_mean(terms.sigma_neg, neg),
        "clip_frac_ppo": share(would_clip, mask),
    }


LOSS = LossSpec(
    name="maspo",
    params=MASPOParams,
    terms=maspo_terms,
    diagnostics=maspo_diagnostics,
    config_class_name="MASPOPolicyLossConfig",
    summary="soft Gaussian gate in the aggressive quadrants, mass-adaptive and risk-controlled width",
)
