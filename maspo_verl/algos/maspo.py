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
No min(), no clip, no dual clip (the authors' "unilateral" design: a token with A < 0 and
r > 1 passes unbounded). The gate is detached on purpose: differentiating through it is a
different algorithm whose gradient changes sign for large rho.

Mechanism variant, off by default (``dual_clip_c = 0``): a dual clip on the negative tokens,
as verl's ``clip_ratio_c`` bounds them in its PPO loss. With c = dual_clip_c > 1,

    l = min(-A * sg(g) * rho,  -A * c)          for A < 0   (both sides are >= 0 there)
    l = -A * sg(g) * rho                        for A >= 0

so a token with A < 0 and g * r > c keeps its loss value -A * c and passes no gradient; every
other token is unchanged. Off, the loss is the one above bit for bit.

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
    count_true,
    flag_rule,
    identity_sum,
    importance_ratio,
    prepare_inputs,
)


@dataclass
class MASPOParams(Params):
    """The seven MASPO hyperparameters, with the authors' defaults, the ablation switch and
    one mechanism variant.

    Validated on construction: a bad value raises ValueError naming the key, the value and
    the allowed range. ``two_sided`` gates all four quadrants (a SAPO-like two-sided gate, an
    ablation the paper reports as unstable); MASPO itself gates only the aggressive two.
    ``dual_clip_c`` > 1 bounds the negative tokens' surrogate at -A * c (verl's dual clip);
    0, the default, leaves it out as the authors do.
    """

    sigma_base: float = 1.0
    alpha: float = 0.3
    beta_pos: float = 0.03
    beta_neg: float = 0.03
    sigma_high: float = 10.0
    adv_low: float = 0.1
    adv_high: float = 10.0
    two_sided: bool = False
    dual_clip_c: float = 0.0

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
        (
            "dual_clip_c",
            lambda p, v: v == 0 or v > 1,
            "equal to 0 (off, the authors' design) or > 1 (the bound for A < 0)",
        ),
    )


class MASPOTerms(NamedTuple):
    """Per-token intermediates of one MASPO loss evaluation, all (batch, response_len)."""

    loss_mat: torch.Tensor  # -A * sg(g) * rho, 0 at masked positions
    log_ratio: torch.Tensor  # clamped log(pi_theta / pi_old), with gradient
    ratio: torch.Tensor  # rho, with gradient
    gate: torch.Tensor  # g in (0, 1], detached
    gate_pos: torch.Tensor  # bool: A > 0 and r > 1
    gate_neg: torch.Tensor  # bool: A < 0 and r < 1
    sigma: torch.Tensor  # trust-region width of the token's side: sigma_pos where A > 0, else sigma_neg
    dual_clipped: torch.Tensor  # bool: A < 0 and g * r > dual_clip_c (no token when the dual clip is off)


def mass_adaptive_sigma(old_log_prob: torch.Tensor, params: MASPOParams) -> torch.Tensor:
    """m = clamp(sigma_base / q^alpha, sigma_base, sigma_high), computed in log space.

    sigma_base / q^alpha = exp(log sigma_base - alpha * log q): no division by a tiny q.
    """
    log_m = torch.sub(math.log(params.sigma_base), old_log_prob, alpha=params.alpha)
    return torch.exp(log_m.clamp_(math.log(params.sigma_base), math.log(params.sigma_high)))


def risk_factor(advantages: torch.Tensor, params: MASPOParams) -> torch.Tensor:
    """The risk factor of each token's side: clamp(1 + beta_pos A) where A > 0, else clamp(1 / (1 - beta_neg A)).

    One quotient (1 + beta_pos max(A, 0)) / (1 - beta_neg min(A, 0)): its numerator is 1 where
    A <= 0 and its denominator 1 where A >= 0 (exact), so each token gets its side's formula
    and A = 0 gets 1; the denominator is >= 1, so the division is always safe.
    """
    widen = torch.add(1.0, advantages.clamp_min(0.0), alpha=params.beta_pos)
    narrow = torch.sub(1.0, advantages.clamp_max(0.0), alpha=params.beta_neg)
    return widen.div_(narrow).clamp_(params.adv_low, params.adv_high)


def trust_region_sigma(old_log_prob: torch.Tensor, advantages: torch.Tensor, params: MASPOParams) -> torch.Tensor:
    """sigma per token: the mass-adaptive width times the risk factor of its advantage's sign."""
    return mass_adaptive_sigma(old_log_prob, params).mul_(risk_factor(advantages, params))


def soft_gate(
    log_ratio: torch.Tensor,
    advantages: torch.Tensor,
    sigma: torch.Tensor,
    two_sided: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unilateral Gaussian gate on the detached ratio; returns (gate, gate_pos, gate_neg).

    A token is gated when sign(A) * log(r) > 0 (A > 0 and r > 1, or A < 0 and r < 1); with
    ``two_sided`` (the ablation) whenever both are nonzero. The sign keeps the product exact.
    Takes log(r) so that r - 1 = expm1(log r) keeps its precision next to r = 1. The gate is
    floored at the dtype's smallest normal number: exp() underflows to 0 for ratios far
    outside the region, and MASPO promises a damped, never a zero, gradient.
    """
    log_r = log_ratio.detach()
    signed = torch.sign(advantages).mul_(log_r)
    gated = signed != 0 if two_sided else signed > 0
    gate_pos = gated & (advantages > 0)
    gate_neg = gated ^ gate_pos  # gated tokens have A != 0
    z = torch.expm1(log_r).div_(sigma)
    gaussian = torch.exp(z.square_().mul_(-0.5)).clamp_min_(torch.finfo(log_r.dtype).tiny)
    return torch.where(gated, gaussian, 1.0), gate_pos, gate_neg


def maspo_terms(inputs: LossInputs, params: MASPOParams, reduce_sum=identity_sum) -> MASPOTerms:
    """MASPO's per-token loss -A * sg(g) * rho and its intermediates (pure, compilable)."""
    log_ratio, ratio = importance_ratio(inputs)
    sigma = trust_region_sigma(inputs.old_log_prob, inputs.advantages, params)
    gate, gate_pos, gate_neg = soft_gate(log_ratio, inputs.advantages, sigma, params.two_sided)
    loss_mat = ratio * torch.mul(gate, inputs.advantages).neg_()
    if not params.dual_clip_c:  # the authors' loss, untouched
        return MASPOTerms(loss_mat, log_ratio, ratio, gate, gate_pos, gate_neg, sigma, torch.zeros_like(gate_pos))
    # A < 0: -A * g * rho and its bound -A * c are both >= 0; the bound wins where g * r > c
    bound = inputs.advantages * -params.dual_clip_c
    dual_clipped = (inputs.advantages < 0) & (loss_mat.detach() > bound)
    loss_mat = torch.where(dual_clipped, bound, loss_mat)
    return MASPOTerms(loss_mat, log_ratio, ratio, gate, gate_pos, gate_neg, sigma, dual_clipped)


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
    with GRPO's actor/pg_clipfrac; dual_clip_frac the share the dual clip cut off (0 when
    off). ``advantages`` are the ones the terms saw (zero where masked), so a token with
    A != 0 is valid, and masked tokens are neither gated nor damped.
    """
    per_valid = 1.0 / count_true(response_mask.bool()).clamp_min(1)
    r = terms.ratio.detach()
    pos, neg = advantages > 0, advantages < 0
    gated_pos, gated_neg = count_true(terms.gate_pos), count_true(terms.gate_neg)
    # the sum of g - 1 is a sum over the gated tokens only, and keeps the precision of g near 1
    gate_deficit = (terms.gate - 1.0).sum()
    would_clip = count_true(pos & (r > 1 + PPO_CLIP_FOR_METRICS)) + count_true(neg & (r < 1 - PPO_CLIP_FOR_METRICS))
    return {
        "gate_mean": 1.0 + gate_deficit / (gated_pos + gated_neg).clamp_min(1),
        "gated_frac_pos": gated_pos * per_valid,
        "gated_frac_neg": gated_neg * per_valid,
        "gate_below_half_frac": count_true(terms.gate < 0.5) * per_valid,
        # sigma is finite everywhere, so a product masks it
        "sigma_pos_mean": (terms.sigma * pos).sum() / count_true(pos).clamp_min(1),
        "sigma_neg_mean": (terms.sigma * neg).sum() / count_true(neg).clamp_min(1),
        "clip_frac_ppo": would_clip * per_valid,
        "dual_clip_frac": count_true(terms.dual_clipped) * per_valid,
    }


LOSS = LossSpec(
    name="maspo",
    params=MASPOParams,
    terms=maspo_terms,
    diagnostics=maspo_diagnostics,
    config_class_name="MASPOPolicyLossConfig",
    summary="soft Gaussian gate in the aggressive quadrants, mass-adaptive and risk-controlled width",
)
