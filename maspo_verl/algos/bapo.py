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
that meets the target are then computed from that vector identically on every rank. The grid
sums cost one binary search per token in the sorted bounds, one scatter-add of the token
weights into the gaps between bounds and a cumulative sum over the gaps (``choose_bounds``),
not a comparison of every token with every bound.

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

from .common import LossInputs, LossSpec, Params, count_true, flag_rule, identity_sum, importance_ratio
from .dac import clipped_surrogate

# A grid of more points than this per bound is a configuration mistake.
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


def in_search_order(per_low: torch.Tensor, per_high: torch.Tensor, upper_first: bool):
    """Expand values given per lower-bound and per upper-bound grid point to one per candidate.

    Candidate k is (low grid point, high grid point) in search order; the first is the pair of
    start values and the last the pair of maxima. Upper first: c_high moves with c_low at its
    start, then c_low with c_high at its maximum; otherwise the other way round. Shapes depend
    on the hyperparameters only, never on data.
    """
    n_low, n_high = len(per_low), len(per_high)
    if upper_first:
        low = torch.cat([per_low[:1].expand(n_high), per_low[1:]])
        high = torch.cat([per_high, per_high[-1:].expand(n_low - 1)])
    else:
        low = torch.cat([per_low, per_low[-1:].expand(n_high - 1)])
        high = torch.cat([per_high[:1].expand(n_low), per_high[1:]])
    return low, high


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


def grid_edges(params: BAPOParams, device) -> torch.Tensor:
    """The float32 bounds as one ascending vector: -c_low (largest first), a 0, then c_high.

    A token's place in it, searched with copysign(r, A), says which candidate sums it joins
    (see ``choose_bounds``). Built on the host and copied without blocking: a blocking
    host-to-device copy would wait for the GPU, a hidden sync in every loss call.
    """
    lows = bound_grid(params.c_low_start, params.c_low_max, params.step_low)
    highs = bound_grid(params.c_high_start, params.c_high_max, params.step_high)
    edges = torch.tensor([-c for c in reversed(lows)] + [0.0] + highs, dtype=torch.float32)
    return edges.to(device, non_blocking=True)


def choose_bounds(
    ratio: torch.Tensor, advantages: torch.Tensor, params: BAPOParams, reduce_sum=identity_sum
) -> BoundChoice:
    """The first candidate pair in search order whose positive share reaches rho0 (else the maxima).

    ``ratio`` is detached here; ``advantages`` are 0 at masked positions, so those count nowhere.
    ``reduce_sum`` is called exactly once, on the vector [pos(c_high) for the high grid,
    neg(c_low) for the low grid].

    No token is compared with every candidate. One binary search per token in the ascending
    vector [-c_low (largest first), 0, c_high] with the key copysign(r, A) gives its bucket:
    for A > 0 the number of c_high below r (after the low side and the 0), for A < 0 the number
    of c_low above r. A token with A > 0 counts in pos(c_high_j) for every c_high_j >= r, i.e.
    for every j from its bucket on, and a token with A < 0 in neg(c_low_i) for every
    c_low_i <= r; so the grid sums are cumulative sums of the buckets' weights. The float32
    comparisons are the ones of r <= c_high and r >= c_low (negation is exact); the weights
    |r A| are accumulated in float64 (tokens with A = 0 weigh 0), so the sums barely depend on
    the order of the additions, and go to ``reduce_sum`` as float32.
    """
    device = ratio.device
    n_low = len(bound_grid(params.c_low_start, params.c_low_max, params.step_low))
    edges = grid_edges(params, device)
    r = ratio.detach().reshape(-1)
    adv = advantages.detach().reshape(-1)
    bucket = torch.searchsorted(edges, torch.copysign(r, adv))
    weight = torch.mul(r, adv).abs_().double()
    bucket_sums = torch.zeros(len(edges) + 1, dtype=torch.float64, device=device).scatter_add_(0, bucket, weight)
    neg_sums = bucket_sums[:n_low].cumsum(0).flip(0)  # neg(c_low_i): buckets of fewer than n_low - i c_low above r
    pos_sums = bucket_sums[n_low + 1 : -1].cumsum(0)  # pos(c_high_j): buckets of at most j c_high below r
    sums = reduce_sum(torch.cat([pos_sums, neg_sums]).float())  # the one cross-rank reduction

    n_high = len(pos_sums)
    neg, pos = in_search_order(sums[n_high:], sums[:n_high], params.upper_first)
    total = pos + neg
    shares = torch.where(total > 0, pos / torch.where(total > 0, total, 1.0), 1.0)

    met = shares >= params.rho0
    # The last candidate (both maxima) is the answer when no candidate meets the target, so
    # mark it as acceptable and take the first acceptable one (argmax returns the first max).
    acceptable = torch.cat([met[:-1], torch.ones_like(met[-1:])])
    chosen = torch.argmax(acceptable.to(torch.int32)).reshape(1)

    def pick(values: torch.Tensor) -> torch.Tensor:  # values[chosen] as a 0-d tensor, no sync
        return values.gather(0, chosen)[0]

    candidate_low, candidate_high = in_search_order(edges[:n_low].flip(0).neg(), edges[n_low + 1 :], params.upper_first)
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
    come from the reduced sums); the clip fractions are over this rank's valid tokens (the clip
    flags need A != 0, so they are false where masked).
    """
    per_valid = 1.0 / count_true(response_mask.bool()).clamp_min(1)
    return {
        "c_low": terms.c_low.float(),
        "c_high": terms.c_high.float(),
        "pos_share": terms.pos_share.float(),
        "pos_share_start": terms.pos_share_start.float(),
        "target_met": terms.target_met.float(),
        "clip_frac_low": count_true(terms.clipped_low) * per_valid,
        "clip_frac_high": count_true(terms.clipped_high) * per_valid,
        "dual_clip_frac": count_true(terms.dual_clipped) * per_valid,
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
