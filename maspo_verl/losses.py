"""One verl adapter for every declared policy loss (``maspo_verl.algos.LOSSES``).

``policy_loss_fn(spec)`` builds the function registered as ``loss_mode=<spec.name>``. It
follows verl 0.9.1's policy-loss contract (keyword arguments, padded (batch, response_len)
tensors, returns ``(loss, metrics)``) and, for every loss alike:

1. reads the loss's params from the actor config (policy-loss keys plus its actor keys);
2. upcasts and zeroes the padded positions (``prepare_inputs``), then runs the pure formulas;
3. multiplies verl's rollout-correction ``rollout_is_weights`` into the per-token loss;
4. aggregates with ``agg_loss(..., **config.global_batch_info)``, so micro-batches add up to
   the mini-batch loss whatever ``loss_agg_mode`` is;
5. counts non-finite inputs at valid positions and computes the diagnostics as tensors, then
   moves them all to the host in ONE sync, raising ValueError on bad data and logging the
   metrics as ``actor/<name>/<metric>`` plus verl's ``actor/ppo_kl``.

Losses whose choice spans the batch (BAPO) get ``reduce_sum``: the data-parallel sum, taken
over the group verl hands its loss function (see ``maspo_verl.hook``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, Optional

import torch
from verl.trainer.ppo.core_algos import agg_loss

from .algos import LOSSES
from .algos.common import (
    LossSpec,
    check_shapes,
    count_nonfinite,
    identity_sum,
    masked_mean,
    prepare_inputs,
    raise_on_nonfinite,
)
from .hook import current_call


def policy_loss_fn(spec: LossSpec) -> Callable:
    prefix = f"actor/{spec.name}/"
    label = spec.name

    def compute_policy_loss(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Optional[Any] = None,
        rollout_is_weights: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        params = loss_params(spec, config)
        mask = response_mask.bool()
        check_shapes(mask, label, log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages,
                     rollout_is_weights=rollout_is_weights)  # fmt: skip
        nonfinite = count_nonfinite(mask, log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages,
                                    rollout_is_weights=rollout_is_weights)  # fmt: skip
        inputs = prepare_inputs(log_prob, old_log_prob, advantages, mask)
        global_batch_info = getattr(config, "global_batch_info", None) or {}

        terms = spec.terms(inputs, params, reduce_sum=data_parallel_sum(global_batch_info, len(mask), label))
        loss_mat = terms.loss_mat
        if rollout_is_weights is not None:
            loss_mat = loss_mat * torch.where(mask, rollout_is_weights.detach().float(), 0.0)
        pg_loss = agg_loss(loss_mat=loss_mat, loss_mask=mask, loss_agg_mode=loss_agg_mode, **global_batch_info)

        diagnostics = spec.diagnostics(terms, inputs.advantages, mask)
        # verl's own trust-region metric, as `vanilla` reports it: the mean of -log(rho).
        diagnostics_names = [prefix + name for name in diagnostics] + ["actor/ppo_kl"]
        values = list(nonfinite.values()) + list(diagnostics.values()) + [masked_mean(-terms.log_ratio, mask)]
        host = torch.stack([value.float() for value in values]).tolist()  # the one device sync
        raise_on_nonfinite(label, dict(zip(nonfinite, host)))
        return pg_loss, dict(zip(diagnostics_names, host[len(nonfinite) :]))

    compute_policy_loss.__name__ = compute_policy_loss.__qualname__ = f"compute_policy_loss_{spec.name}"
    compute_policy_loss.__doc__ = f"`{spec.name}` policy loss ({spec.summary}); formulas in {spec.terms.__module__}."
    return compute_policy_loss


def data_parallel_sum(global_batch_info: dict, local_samples: int, label: str) -> Callable:
    """``reduce_sum`` for this call: identity on one rank, else the joined all-reduce over the
    data-parallel group that verl gave its loss function (never the default group)."""
    dp_size = int(global_batch_info.get("dp_size") or 1)
    if dp_size <= 1:
        return identity_sum
    call = current_call()
    if call is None or call.dp_group is None:
        raise RuntimeError(
            f"{label} loss: dp_size={dp_size} but no data-parallel group reached the loss. maspo-verl's ppo_loss hook "
            "(maspo_verl.hook) was not in the call path, so the installed verl calls policy losses differently "
            "from verl 0.9.1; the batch statistic cannot be summed over the data-parallel ranks."
        )
    samples_per_rank = int(global_batch_info["global_batch_size"]) // dp_size
    return lambda tensor: call.joined_sum(tensor, call.dp_group, local_samples, samples_per_rank)


def loss_params(spec: LossSpec, config) -> Any:
    """The loss's Params from the actor config (policy_loss keys plus its actor keys).

    Read defensively: verl's distillation path calls policy losses with another config type,
    and a plain PolicyLossConfig (no fields of ours) means the defaults.
    """
    policy_loss = getattr(config, "policy_loss", None)
    values = {}
    for f in fields(spec.params):
        source = config if f.name in spec.actor_keys else policy_loss
        value = None if source is None else _get(source, f.name)
        if value is not None:
            values[f.name] = value
    return spec.params(**values)


def _get(source, key):
    return source.get(key) if hasattr(source, "get") else getattr(source, key, None)


# name -> loss function; registered with verl by maspo_verl.registration.
POLICY_LOSSES = {spec.name: policy_loss_fn(spec) for spec in LOSSES}
compute_policy_loss_maspo = POLICY_LOSSES["maspo"]
