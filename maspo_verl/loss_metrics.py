"""The same figures for every policy loss, measured from the loss's own gradient.

Every loss reweights the plain policy-gradient term -A * rho in its own way: PPO's clip zeroes
tokens, SAPO and MASPO damp them, CISPO and GSPO reweight them. Their own metrics count
different things (verl's ``pg_clipfrac``, MASPO's ``gated_frac_*``), so they cannot be compared.
These figures can: ``maspo_verl.hook`` measures every policy loss that verl's ``ppo_loss`` calls,
verl's and ours alike, by differentiating the loss it returned.

Per valid token t of a micro-batch, with rho_t = exp(clamp(log_prob_t - old_log_prob_t, -20, 20)),
A_t the advantage the loss saw (after any advantage shaper), w_t verl's rollout-correction weight
(1 without one), L the policy loss as the loss function returned it and c_t the weight its
aggregation gives the token (``compat.aggregation_weights``: 1/tokens for token-mean, ...):

    G_t       = dL / d log_prob_t                       autograd, exact: the gradient the update uses
    kept_t    = G_t / (c_t * (-A_t * rho_t * w_t))      1 for the plain loss -A * rho * w
    removed_t = 1 - kept_t

``actor/pg_weight/removed``: the mean of removed_t over the tokens where -A * rho * w has a
gradient (valid, A != 0, w != 0). It reads the same for every loss: a hard clip contributes 1 per
clipped token and 0 per other token (verl's vanilla, its dual clip, DAC, BAPO), MASPO 1 - g
(1 where its dual clip cuts), SAPO 1 - f'(r) with f its gate, CISPO 1 - clip(r) / r and DPPO
1 - mask * min(r, c) / r (their weights are detached), GSPO 1 - s / r with s the sequence's
ratio (0 where clipped: removed 1). It is negative where a loss gives a token more weight than
-A * rho does (CISPO and GSPO can).
``actor/pg_weight/neg_above_share``: sum of |G_t| over the tokens with A < 0 and r > 1, divided
by the sum of |G_t| over all valid tokens: the share of the update that pushes down tokens the
policy has already made more likely (the tokens a dual clip bounds and MASPO leaves unbounded).
``actor/ratio/<quadrant>/...``: the ratio r in each quadrant, ``pos_above`` (A > 0, r > 1),
``pos_below`` (A > 0, r <= 1), ``neg_above`` (A < 0, r > 1), ``neg_below`` (A < 0, r <= 1):
``share`` (of the valid tokens), the quantiles ``q10``, ``q50`` and ``q90`` (linear
interpolation, as numpy's default), and the extreme, ``max`` above 1 and ``min`` below.

verl averages each figure over micro-batches and ranks, and then over the updates of a step; the
extremes are the largest (smallest) over all of them. A micro-batch with no token in a quadrant
reports that quadrant's quantiles as 1 (its boundary, r = 1) and a share of 0; one where no
token has a gradient under -A * rho reports ``removed`` and ``neg_above_share`` as 0.

Cost: one backward pass through the loss's own operations (not the model's), a sort of the
micro-batch's ratios (and of their quadrants), and ONE host sync for all 22 figures.
"""

from __future__ import annotations

import torch

from .algos.common import finite_positions

WEIGHT = "actor/pg_weight/"
RATIO = "actor/ratio/"
QUANTILES = {"q10": 0.1, "q50": 0.5, "q90": 0.9}
# quadrant -> (sign of A, ratio above 1)
QUADRANTS = {"pos_above": (1, True), "pos_below": (1, False), "neg_above": (-1, True), "neg_below": (-1, False)}
LOG_RATIO_LIMIT = 20.0  # verl's and our losses clamp the log-ratio there
TINY = torch.finfo(torch.float32).tiny  # a sum of no gradient divides to 0, not NaN


def measure(pg_loss: torch.Tensor, probe: torch.Tensor, aggregation_weights: torch.Tensor, inputs: dict) -> dict:
    """{metric: (value, aggregation)} for one policy-loss call; ``probe`` is the zero tensor that was
    added to ``inputs["log_prob"]`` before the loss saw it, so dL/d probe = dL/d log_prob."""
    (grad,) = torch.autograd.grad(pg_loss, probe, retain_graph=True, allow_unused=True)
    if grad is None:  # the loss does not depend on log_prob (every token masked)
        grad = torch.zeros_like(probe)
    figures = gradient_figures(
        grad, aggregation_weights, inputs["log_prob"], inputs["old_log_prob"], inputs["advantages"],
        inputs["response_mask"], inputs.get("rollout_is_weights"),
    )  # fmt: skip
    values = torch.stack([value.float() for value in figures.values()]).tolist()  # the one host sync
    return {name: (value, aggregation(name)) for name, value in zip(figures, values)}


def aggregation(name: str) -> str:
    """How verl combines a figure over micro-batches and ranks: the extremes by max / min."""
    return name.rsplit("/", 1)[-1] if name.endswith(("/max", "/min")) else "mean"


def gradient_figures(grad, weights, log_prob, old_log_prob, advantages, response_mask, rollout_is_weights=None):
    """The figures of the module docstring as 0-d tensors (no host sync). ``grad`` is dL/d log_prob,
    ``weights`` the aggregation's per-token weight c_t; everything (batch, response_len)."""
    log_prob, old_log_prob = log_prob.detach().float(), old_log_prob.detach().float()
    advantages, grad = advantages.detach().float(), grad.detach().float()
    is_weights = torch.ones_like(advantages) if rollout_is_weights is None else rollout_is_weights.detach().float()
    valid = finite_positions(response_mask.bool(), log_prob, old_log_prob, advantages, is_weights, grad)
    ratio = torch.exp((log_prob - old_log_prob).clamp(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT))
    ratio = torch.where(valid, ratio, 1.0)
    grad = torch.where(valid, grad, 0.0)

    plain = weights * -advantages * ratio * is_weights  # the gradient of -A * rho * w, aggregated alike
    weighted = valid & (plain != 0)
    removed = torch.where(weighted, 1.0 - grad / torch.where(weighted, plain, 1.0), 0.0)
    magnitude = grad.abs()
    neg_above = valid & (advantages < 0) & (ratio > 1)
    figures = {
        WEIGHT + "removed": removed.sum() / weighted.sum().clamp_min(1),
        WEIGHT + "neg_above_share": torch.where(neg_above, magnitude, 0.0).sum() / magnitude.sum().clamp_min(TINY),
    }
    figures.update(quadrant_figures(ratio, advantages, valid))
    return figures


def quadrant_figures(ratio: torch.Tensor, advantages: torch.Tensor, valid: torch.Tensor) -> dict:
    """Share, quantiles and extreme of the ratio in each quadrant, as 0-d tensors (no host sync)."""
    above = ratio > 1
    # the quadrant of each token, in QUADRANTS' order; len(QUADRANTS) for tokens in none (A = 0, masked)
    quadrant = torch.where(advantages > 0, torch.where(above, 0, 1), torch.where(above, 2, 3))
    quadrant = torch.where(valid & (advantages != 0), quadrant, len(QUADRANTS))
    probabilities = [*QUANTILES.values(), 0.0, 1.0]
    values, counts = grouped_quantiles(ratio.flatten(), quadrant.flatten(), len(QUADRANTS), probabilities)
    figures = {}
    for row, (name, (_, is_above)) in enumerate(QUADRANTS.items()):
        prefix = f"{RATIO}{name}/"
        figures[prefix + "share"] = counts[row] / valid.sum().clamp_min(1)
        for column, quantile in enumerate(QUANTILES):
            figures[prefix + quantile] = values[row, column]
        figures[prefix + ("max" if is_above else "min")] = values[row, -1 if is_above else -2]
    return figures


def grouped_quantiles(values: torch.Tensor, groups: torch.Tensor, n_groups: int, probabilities: list[float]):
    """((n_groups, len(probabilities)) quantiles, (n_groups,) counts) of ``values`` (n,) within each
    group 0 .. n_groups - 1 (``groups`` (n,) int; other ids are left out), interpolated linearly
    between order statistics as numpy's and torch's default; 1.0 for a group without members.

    One sort by value, then a stable sort by group, lays the groups out one after another, each in
    order, with no sort per group and no host sync: not ``values[mask]`` (its size), nor
    ``bincount`` (its maximum), nor a tensor built from host numbers (a copy to the device)."""
    by_value = values.argsort()
    order = by_value[groups[by_value].argsort(stable=True)]
    ordered = values[order]
    slots = groups.clamp(0, n_groups)  # slot n_groups gathers the tokens in no group
    counts = torch.zeros(n_groups + 1, dtype=torch.long, device=values.device)
    counts = counts.scatter_add_(0, slots, torch.ones_like(slots))[:n_groups]
    starts = counts.cumsum(0) - counts
    position = torch.stack([(counts - 1).clamp_min(0) * q for q in probabilities], dim=1)
    low, high = position.floor().long(), position.ceil().long()
    last = len(ordered) - 1  # an empty group may start past the end; its (unused) reads stay in range
    below, above = ordered[(starts[:, None] + low).clamp_max(last)], ordered[(starts[:, None] + high).clamp_max(last)]
    interpolated = below + (position - low) * (above - below)
    return torch.where(counts[:, None] > 0, interpolated, 1.0), counts
