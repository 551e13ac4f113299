"""BAPO: Balanced Policy Optimization with Adaptive Clipping (arXiv 2510.18927), in plain torch.

BAPO keeps PPO's clipped surrogate but chooses its two ratio bounds afresh for every update,
so that the tokens with a positive advantage carry at least a share rho0 of the policy-gradient
contribution. The bounds c_low < 1 < c_high are explicit ratio bounds (not 1 -+ eps).

Per token, rho = exp(clamp(log_prob - old_log_prob, -20, 20)) (with gradient), r = sg(rho),
A the advantage (no gradient). For candidate bounds (c_low, c_high):

    pos(c_high) = sum over A > 0 tokens with r <= c_high of |r A|
    neg(c_low)  = sum over A < 0 tokens with r >= c_low  of |r A|
    share       = pos / (pos + neg)        (1 when pos + neg = 0: nothing to balance)

Only tokens that still pass a gradient count (the paper's stated intent): raising c_high
admits more (low-probability) positive tokens, raising c_low filters more (low-probability)
negative ones, so the share grows along the search. (The paper's Eq. 8,
read literally, sums the clipped objective min(r A, clip(r, .) A), which counts a clipped token
at its bound; under that reading raising c_low would *raise* the negative part and the search
could never reach the target by moving c_low, contradicting the paper's own Section 4.2
and Algorithm 1. The authors' port follows the literal reading; see below.) The search starts at
(c_low_start, c_high_start) and moves one bound by one step at a time, upper bound first as
the paper's Algorithm 1 does (c_high_start, c_high_start + step_high, ..., c_high_max, with c_low
at its start; then c_low up to c_low_max, with c_high at its maximum); the chosen pair is the
first candidate whose share reaches rho0, else both bounds at their maxima (the last
candidate). A step that would pass a maximum stops at it. ``upper_first=False`` searches in the
order of the authors' port instead (c_low first, then c_high). Then, as in the authors' verl port:

    l = -min(rho * A, clip(rho, c_low, c_high) * A)
    l = min(l, -A * clip_ratio_c)        for A < 0 (verl's dual clip, which the port keeps)

The tokens the dual clip cuts off (A < 0, r > clip_ratio_c) still count in neg(c_low): the
paper's objective has no dual clip and its statistic is defined without it.

Implementation: the search is vectorised, with no host sync and no data-dependent Python loop.
pos() is evaluated on the whole c_high grid and neg() on the whole c_low grid (the grids come
from the hyperparameters only), as ONE vector that goes through ``reduce_sum`` exactly once (the
all-reduce over the data-parallel group); the shares of all candidates and the first candidate
that meets the target are then computed from that vector identically on every rank. Eager mode
materialises (tokens x grid points) temporaries, 44 grid points at the defaults; under
torch.compile the comparisons fuse into the reductions.

Invariances. The bounds depend on the data of one loss call, i.e. one micro-batch (summed over
the data-parallel group), so unlike the other losses of this project, BAPO is NOT invariant to
how a mini-batch is split into micro-batches: different splits choose different bounds. It is
invariant to how a micro-batch's tokens are sharded over data-parallel ranks, because the grid
sums are reduced before the choice. The all-reduce is a collective; on the verl side
(``maspo_verl.dp_sync.JoinedSum``) ranks that make fewer loss calls in a mini-batch keep joining
the others' calls, so it never deadlocks.

Where this differs from the authors' public verl port (WooooDyy/BAPO, recipe/bapo/policy_loss.py)
and why:

* Statistic. The port sums min(r, c_high) * A over A >= 0 and max(r, c_low) * |A| over A < 0,
  i.e. clipped tokens are counted at the bound. Raising c_low then *increases* the negative sum,
  the opposite of the paper's stated mechanism (filtering excessive negatives). Here only
  gradient-passing tokens count, weighted |r A| with the unclipped r.
* Target. The port compares pos / neg with its ``adv_ratio_target`` (1 in its yaml, i.e. a share
  of 0.5, but 0.5 in its example script, a share of 1/3); here the share pos / (pos + neg) is
  compared with rho0 as the paper and its README state (rho0 = 0.5).
* Reduction. The port all-reduces its two sums over the default (world) process group after
  every candidate, with a host sync (.item()) and a Python while loop per candidate; here one
  vector over the data-parallel group only (other groups, e.g. tensor- or sequence-parallel
  replicas of the same tokens, must not be summed twice), reduced once per loss call.
* Grid. The port accumulates c += step and clips to the maximum; here candidates are
  start + k * step clipped to the maximum: the same values without accumulated rounding, which
  in the port adds a near-duplicate last step on the default upper range (2.999999999999997,
  then 3.0).
* Order. The port moves c_low first, then c_high (``upper_first=False``). The paper's
  Algorithm 1 raises c_high first and c_low only once c_high is at its maximum: the default
  here, since we follow the paper where the two disagree.

This module imports torch only (no verl); ``maspo_verl.losses`` wires it into verl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .common import LossInputs, LossSpec, Params, flag_rule, identity_sum, importance_ratio, share
from .dac import clipped_surrogate

# A grid of more points than this per bound is a configuration mistake (and memory: eager mode
# holds tokens x grid points).
MAX_GRID_STEPS = 1000


def _steps_ok(span: float, step: float) -> bool:
    return step > 0 and span / step <= MAX_GRID_STEPS


@dataclass
class BAPOParams(Params):
    """BAPO's hyperparameters, with the authors' defaults (README and recipe yaml).

    rho0: target positive share in [0, 1] (0 keeps the start bounds, like a fixed clip).
    c_low_start <= c_low_max < 1 < c_high_start <= c_high_max: the movable ranges.
    step_low, step_high > 0, at most 1000 steps across each range.
    clip_ratio_c: verl's actor key for the dual clip (> 1, as verl requires).
    upper_first: search order (True: upper bound first, as the paper's Algorithm 1; False:
    lower bound first, as the authors' port).
    """

    rho0: float = 0.5
    c_low_start: float = 0.6
    c_low_max: float = 0.9
    c_high_start: float = 1.2
    c_high_max: float = 3.0
    step_low: float = 0.05
    step_high: float = 0.05
    clip_ratio_c: float = 3.0
    upper_first: bool = True

    LABEL = "BAPO"
    # Each rule may only name settings checked before it.
    RULES = (
        ("rho0", lambda p, v: 0 <= v <= 1, "in [0, 1]"),
        ("c_low_start", lambda p, v: 0 < v < 1, "in (0, 1)"),
        ("c_low_max", lambda p, v: p.c_low_start <= v < 1, "in [c_low_start, 1) (c_low_start = {c_low_start})"),
        ("c_high_start", lambda p, v: v > 1, "> 1"),
        ("c_high_max", lambda p, v: v >= p.c_high_start, ">= c_high_start (c_high_start = {c_high_start})"),
        (
            "step_low",
            lambda p, v: _steps_ok(p.c_low_max - p.c_low_start, v),
            f"> 0 and at least (c_low_max - c_low_start) / {MAX_GRID_STEPS}",
        ),
        (
            "step_high",
            lambda p, v: _steps_ok(p.c_high_max - p.c_high_start, v),
            f"> 0 and at least (c_high_max - c_high_start) / {MAX_GRID_STEPS}",
        ),
        ("clip_ratio_c", lambda p, v: v > 1, "> 1 (verl's dual-clip bound)"),
        flag_rule("upper_first"),
    )


def bound_grid(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... and finally stop exactly (a step past stop stops at it)."""
    n = max(math.ceil((stop - start) / step - 1e-9), 0)
    return [min(start + k * step, stop) for k in range(n + 1)]


def search_order(params: BAPOParams) -> tuple[list[float], list[float], list[int], list[int]]:
    """(low grid, high grid, low index, high index) of every candidate, in search order.

    Candidate k is (low_grid[low_index[k]], high_grid[high_index[k]]). The first is the pair
    of start values and the last the pair of maxima, in either order. Python-level: depends on
    the hyperparameters only, never on data.
    """
    lows = bound_grid(params.c_low_start, params.c_low_max, params.step_low)
    highs = bound_grid(params.c_high_start, params.c_high_max, params.step_high)
    n_low, n_high = len(lows), len(highs)
    if params.upper_first:
        low_index = [0] * n_high + list(range(1, n_low))
        high_index = list(range(n_high)) + [n_high - 1] * (n_low - 1)
    else:
        low_index = list(range(n_low)) + [n_low - 1] * (n_high - 1)
        high_index = [0] * n_low + list(range(1, n_high))
    return lows, highs, low_index, high_index


class BAPOTerms(NamedTuple):
    """One BAPO loss evaluation: per-token tensors (batch, response_len) and the chosen bounds."""

    loss_mat: torch.Tensor  # clipped surrogate with dual clip, 0 at masked positions
    log_ratio: torch.Tensor  # clamped log(pi_theta / pi_old), with gradient
    ratio: torch.Tensor  # rho, with gradient
    c_low: torch.Tensor  # 0-d, the chosen lower bound
    c_high: torch.Tensor  # 0-d, the chosen upper bound
    pos_share: torch.Tensor  # 0-d, pos / (pos + neg) at the chosen bounds
    pos_share_start: torch.Tensor  # 0-d, the same at the start bounds
    target_met: torch.Tensor  # 0-d bool, pos_share >= rho0
    candidate_shares: torch.Tensor  # (candidates,), the share of every candidate in search order
    clipped_low: torch.Tensor  # bool: the min picks the clipped branch at c_low (A < 0, rho < c_low)
    clipped_high: torch.Tensor  # bool: the min picks the clipped branch at c_high (A > 0, rho > c_high)
    dual_clipped: torch.Tensor  # bool: A < 0 and the dual clip -A * clip_ratio_c takes effect


class BoundChoice(NamedTuple):
    c_low: torch.Tensor
    c_high: torch.Tensor
    pos_share: torch.Tensor
    pos_share_start: torch.Tensor
    target_met: torch.Tensor
    candidate_shares: torch.Tensor


def choose_bounds(
    ratio: torch.Tensor, advantages: torch.Tensor, params: BAPOParams, reduce_sum=identity_sum
) -> BoundChoice:
    """The first candidate pair in search order whose positive share reaches rho0 (else the maxima).

    ``ratio`` is detached here; ``advantages`` are 0 at masked positions, so those count nowhere.
    ``reduce_sum`` is called exactly once, on the vector [pos(c_high) for the high grid,
    neg(c_low) for the low grid].
    """
    lows, highs, low_index, high_index = search_order(params)
    device = ratio.device
    low_grid = torch.tensor(lows, dtype=torch.float32, device=device)
    high_grid = torch.tensor(highs, dtype=torch.float32, device=device)

    r = ratio.detach().reshape(-1, 1)
    adv = advantages.detach().reshape(-1, 1)
    weight = (r * adv).abs()
    zero = torch.zeros((), dtype=torch.float32, device=device)
    pos_sums = torch.where((adv > 0) & (r <= high_grid), weight, zero).sum(dim=0)
    neg_sums = torch.where((adv < 0) & (r >= low_grid), weight, zero).sum(dim=0)
    sums = reduce_sum(torch.cat([pos_sums, neg_sums]))  # the one cross-rank reduction

    n_high = len(highs)
    pos = sums[:n_high][torch.tensor(high_index, device=device)]
    neg = sums[n_high:][torch.tensor(low_index, device=device)]
    total = pos + neg
    shares = torch.where(total > 0, pos / torch.where(total > 0, total, 1.0), 1.0)

    met = shares >= params.rho0
    # The last candidate (both maxima) is the answer when no candidate meets the target, so
    # mark it as acceptable and take the first acceptable one (argmax returns the first max).
    acceptable = torch.cat([met[:-1], torch.ones_like(met[-1:])])
    chosen = torch.argmax(acceptable.to(torch.int32)).reshape(1)

    def pick(values: torch.Tensor) -> torch.Tensor:  # values[chosen] as a 0-d tensor, no sync
        return values.gather(0, chosen)[0]

    candidate_low = torch.tensor([lows[i] for i in low_index], dtype=torch.float32, device=device)
    candidate_high = torch.tensor([highs[i] for i in high_index], dtype=torch.float32, device=device)
    return BoundChoice(
        c_low=pick(candidate_low),
        c_high=pick(candidate_high),
        pos_share=pick(shares),
        pos_share_start=shares[0],
        target_met=pick(met),
        candidate_shares=shares,
    )


def bapo_terms(inputs: LossInputs, params: BAPOParams, reduce_sum=identity_sum) -> BAPOTerms:
    """BAPO's per-token loss with bounds chosen on this call's data (pure, compilable)."""
    log_ratio, ratio = importance_ratio(inputs)
    choice = choose_bounds(ratio, inputs.advantages, params, reduce_sum)
    loss_mat, clipped_low, clipped_high, dual_clipped = clipped_surrogate(
        ratio, inputs.advantages, choice.c_low, choice.c_high, params.clip_ratio_c
    )
    return BAPOTerms(
        loss_mat, log_ratio, ratio, choice.c_low, choice.c_high, choice.pos_share, choice.pos_share_start,
        choice.target_met, choice.candidate_shares, clipped_low, clipped_high, dual_clipped,
    )  # fmt: skip


def bapo_diagnostics(terms: BAPOTerms, advantages: torch.Tensor, response_mask: torch.Tensor) -> dict:
    """Chosen bounds, shares and clip fractions, as 0-d float tensors.

    c_low, c_high, pos_share, pos_share_start and target_met are the same on every rank (they
    come from the reduced sums); the clip fractions are over this rank's valid tokens.
    """
    mask = response_mask.bool()
    return {
        "c_low": terms.c_low.float(),
        "c_high": terms.c_high.float(),
        "pos_share": terms.pos_share.float(),
        "pos_share_start": terms.pos_share_start.float(),
        "target_met": terms.target_met.float(),
        "clip_frac_low": share(terms.clipped_low, mask),
        "clip_frac_high": share(terms.clipped_high, mask),
        "dual_clip_frac": share(terms.dual_clipped, mask),
    }


LOSS = LossSpec(
    name="bapo",
    params=BAPOParams,
    terms=bapo_terms,
    diagnostics=bapo_diagnostics,
    config_class_name="BAPOPolicyLossConfig",
    summary="clip bounds searched per update so positive-advantage tokens carry a share rho0 of the gradient",
    actor_keys=("clip_ratio_c",),
)
