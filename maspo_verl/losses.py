"""One verl adapter for every declared policy loss (``maspo_verl.algos.LOSSES``).

``policy_loss_fn(spec)`` builds the function registered as ``loss_mode=<spec.name>``. It
follows verl 0.9.1's policy-loss contract (keyword arguments, padded (batch, response_len)
tensors, returns ``(loss, metrics)``) and, for every loss alike:

1. reads the loss's params from the actor config (policy-loss keys plus its actor keys);
2. finds the valid tokens whose inputs (log_prob, old_log_prob, advantages, rollout_is_weights)
   are not all finite and treats them like padding (``finite_positions``);
3. upcasts and zeroes the padded positions (``prepare_inputs``), then runs the pure formulas;
4. multiplies verl's rollout-correction ``rollout_is_weights`` into the per-token loss;
5. aggregates with ``agg_loss(..., **config.global_batch_info)``, so micro-batches add up to
   the mini-batch loss whatever ``loss_agg_mode`` is;
6. computes the diagnostics as tensors and moves them, with the count of masked tokens, to the
   host in ONE sync, logging them as ``actor/<name>/<metric>`` plus verl's ``actor/ppo_kl``.

Non-finite inputs. A NaN or inf at a valid position is bad data. Masking it at the input
(``torch.where`` before any arithmetic) gives that token exactly zero loss and zero gradient,
and the other tokens the loss and gradient of a batch without it. The masked tokens are
counted (``actor/<name>/nonfinite_tokens``, ``actor/<name>/nonfinite_calls``) and logged as a
warning; after ``actor_rollout_ref.actor.policy_loss.max_consecutive_nonfinite_calls`` loss
calls in a row with such tokens, the next one raises (``NonfiniteStreak``). A call that finds
some makes one more host sync, to name the inputs in its message. A non-finite ``log_prob``
comes from the model's own forward pass: zeroing it here does not clean the backward pass
through the model (the softmax's backward multiplies the NaN logits by the zero gradient), so
that step's gradient norm is not finite, and verl's FSDP engine skips the optimizer step
(``FSDPEngine.optimizer_step`` in verl/workers/engine/fsdp/transformer_impl.py: "if grad_norm
is not finite, skip the update", it zeroes the gradients and steps nothing, printing a WARN
line; the norm is the all-reduced one, so every rank skips together).

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
    DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS,
    NONFINITE_SETTING,
    LossSpec,
    NonfiniteStreak,
    check_nonfinite_limit,
    check_shapes,
    count_nonfinite,
    count_true,
    finite_positions,
    identity_sum,
    prepare_inputs,
)
from .hook import current_call


def policy_loss_fn(spec: LossSpec) -> Callable:
    prefix = f"actor/{spec.name}/"
    label = spec.name
    streak = NonfiniteStreak(label)

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
        limit = nonfinite_limit(config)
        mask = response_mask.bool()
        check_shapes(mask, label, log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages,
                     rollout_is_weights=rollout_is_weights)  # fmt: skip
        valid = finite_positions(mask, old_log_prob, advantages, log_prob, rollout_is_weights)
        inputs = prepare_inputs(log_prob, old_log_prob, advantages, valid)
        global_batch_info = getattr(config, "global_batch_info", None) or {}

        terms = spec.terms(inputs, params, reduce_sum=data_parallel_sum(global_batch_info, len(mask), label))
        loss_mat = terms.loss_mat
        if rollout_is_weights is not None:
            loss_mat = loss_mat * torch.where(valid, rollout_is_weights.detach().float(), 0.0)
        pg_loss = agg_loss(loss_mat=loss_mat, loss_mask=valid, loss_agg_mode=loss_agg_mode, **global_batch_info)

        diagnostics = spec.diagnostics(terms, inputs.advantages, valid)
        # verl's own trust-region metric, as `vanilla` reports it: the mean of -log(rho) (log rho is 0 where masked).
        values = [count_true(mask), count_true(valid), terms.log_ratio.detach().sum(), *diagnostics.values()]
        tokens, valid_tokens, log_ratio_sum, *host = torch.stack(values).tolist()  # the one device sync
        nonfinite = tokens - valid_tokens

        def which_inputs() -> str:  # a second sync, only in a call that found non-finite inputs
            counts = count_nonfinite(mask, log_prob=log_prob, old_log_prob=old_log_prob, advantages=advantages,
                                     rollout_is_weights=rollout_is_weights)  # fmt: skip
            found = torch.stack(list(counts.values())).tolist()
            return ", ".join(f"{name}: {int(n)}" for name, n in zip(counts, found) if n)

        streak.update(int(nonfinite), limit, which_inputs)
        metrics = {prefix + name: value for name, value in zip(diagnostics, host)}
        metrics["actor/ppo_kl"] = -log_ratio_sum / max(valid_tokens, 1)
        metrics[prefix + "nonfinite_tokens"] = nonfinite
        metrics[prefix + "nonfinite_calls"] = float(nonfinite > 0)
        return pg_loss, metrics

    compute_policy_loss.__name__ = compute_policy_loss.__qualname__ = f"compute_policy_loss_{spec.name}"
    compute_policy_loss.__doc__ = f"`{spec.name}` policy loss ({spec.summary}); formulas in {spec.terms.__module__}."
    compute_policy_loss.nonfinite_streak = streak
    return compute_policy_loss


def nonfinite_limit(config) -> int:
    """``policy_loss.max_consecutive_nonfinite_calls``; the default where the config has none
    (a plain PolicyLossConfig, verl's distillation path)."""
    policy_loss = getattr(config, "policy_loss", None)
    value = None if policy_loss is None else _get(policy_loss, NONFINITE_SETTING)
    if value is None:
        return DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS
    return check_nonfinite_limit(value)


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
