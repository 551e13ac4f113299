"""Entropy advantage: an advantage shaper (Cheng et al., "Reasoning with Exploration: An
Entropy Perspective", arXiv 2506.14758), in plain torch.

Per response token, with H the current policy's entropy over the vocabulary at that
position (detached) and A the advantage:

    A' = A + min(alpha * sg(H), |A| / kappa)

The bonus is never negative and never larger than |A| / kappa, so with kappa > 1 the sign of
A never flips and A = 0 stays 0: the bonus rewards exploratory tokens inside responses that
already carry a learning signal, and cannot turn a penalised token into a rewarded one.
The authors' setting with GRPO: alpha = 0.4, kappa = 2. alpha = 0 makes it a no-op.

It is a shaper, not a loss: ``maspo_verl.shaping`` applies it to the advantages just before
the policy-gradient term of whichever loss the run uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch

from .common import Params, masked_mean


@dataclass
class EntropyAdvParams(Params):
    alpha: float = 0.4
    kappa: float = 2.0

    LABEL = "entropy_adv"
    RULES = (
        ("alpha", lambda p, v: v >= 0, ">= 0 (0 turns the shaping off)"),
        # kappa = 1 could cancel a negative advantage to 0; below 1 it could flip its sign
        ("kappa", lambda p, v: v > 1, "> 1 (the bonus is capped at |A| / kappa, so A never changes sign)"),
    )


class ShaperInputs(NamedTuple):
    """What a shaper may use, all (batch, response_len), padded positions masked out."""

    advantages: torch.Tensor
    response_mask: torch.Tensor  # bool
    old_log_prob: torch.Tensor
    log_prob: torch.Tensor  # current policy, detached
    entropy: Optional[torch.Tensor]  # current policy's token entropy, detached; None unless asked for


def entropy_advantage(inputs: ShaperInputs, params: EntropyAdvParams) -> tuple[torch.Tensor, dict]:
    """A' = A + min(alpha * sg(H), |A| / kappa) at valid tokens; A unchanged elsewhere."""
    mask = inputs.response_mask
    advantages = inputs.advantages.float()
    entropy = torch.where(mask, inputs.entropy.detach().float(), 0.0)
    uncapped = params.alpha * entropy
    cap = advantages.abs() / params.kappa
    bonus = torch.where(mask, torch.minimum(uncapped, cap), 0.0)
    shaped = advantages + bonus
    metrics = {
        "bonus_mean": masked_mean(bonus, mask),
        "relative_shift_mean": masked_mean(bonus / advantages.abs().clamp_min(1e-8), mask & (advantages != 0)),
        "capped_frac": ((uncapped > cap) & mask).sum() / mask.sum().clamp_min(1),
        "entropy_mean": masked_mean(entropy, mask),
    }
    return shaped.to(inputs.advantages.dtype), metrics
