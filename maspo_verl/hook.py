"""The one place where maspo-verl steps into verl's actor loss: a wrapper around verl's
``ppo_loss`` (``verl/workers/utils/losses.py``), put in place by ``maspo_verl.registration``
through ``maspo_verl.compat.install_ppo_loss_hook``.

verl's engine calls ``ppo_loss(config, model_output, data, dp_group)`` once per micro-batch.
``ppo_loss`` computes the current policy's entropy (when ``actor.calculate_entropy``) and
knows the data-parallel group, but hands neither to the policy loss. The wrapper

* applies the configured advantage shaper (``maspo_verl.shaping``) to ``data["advantages"]``
  before verl's ``ppo_loss`` runs, so the shaped advantages reach ANY policy loss (vanilla,
  maspo, dac, ...), using the entropy from the same forward pass (no second one);
* exposes the data-parallel group to our losses for the duration of the call
  (``current_call()``), for statistics summed over the group (BAPO);
* measures the policy loss, whichever it is, from its own gradient (``maspo_verl.loss_metrics``:
  the share of policy-gradient weight it removes relative to -A * rho, the ratio per quadrant):
  ``measured_lookup`` hands ``ppo_loss`` the policy loss with a zero tensor added to its
  log-probs, and the gradient of the returned loss with respect to that zero is the loss's
  per-token gradient. Adding a zero changes neither the loss nor the gradient the model gets;
* adds the shaper's metrics as ``actor/shaper/<name>/<metric>``, and the loss's as
  ``actor/pg_weight/*`` and ``actor/ratio/*``.

It fails loudly rather than silently: a shaper that needs the entropy raises when verl
computed none, and a loss that needs the group raises when the wrapper was bypassed.
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .compat import padded_response, to_data_layout, verl_metric
from .dp_sync import JoinedSum
from .shaping import NO_SHAPER, ShaperInputs, resolve_shaper

SHAPER_METRIC_PREFIX = "actor/shaper/"


@dataclass
class LossCall:
    """What one ``ppo_loss`` call knows that the policy loss is not given."""

    dp_group: Any = None
    joined_sum: JoinedSum = field(default_factory=JoinedSum)
    loss_metrics: dict = field(default_factory=dict)  # {name: (value, aggregation)} of the policy loss


_CALL: contextvars.ContextVar[Optional[LossCall]] = contextvars.ContextVar("maspo_verl_loss_call", default=None)
_JOINED_SUMS: dict[int, JoinedSum] = {}  # one protocol state per process group, kept across calls


def current_call() -> Optional[LossCall]:
    """The ``ppo_loss`` call in progress, or None outside the wrapper."""
    return _CALL.get()


def hooked_ppo_loss(verl_ppo_loss):
    """Wrap verl's ``ppo_loss``; the wrapper keeps its signature and is marked as ours."""

    @functools.wraps(verl_ppo_loss)
    def ppo_loss(config, model_output, data, dp_group=None):
        data, shaper_metrics = shape_advantages(config, model_output, data)
        joined = _JOINED_SUMS.setdefault(id(dp_group), JoinedSum())
        call = LossCall(dp_group=dp_group, joined_sum=joined)
        token = _CALL.set(call)
        try:
            loss, metrics = verl_ppo_loss(config, model_output, data, dp_group)
        finally:
            _CALL.reset(token)
        metrics.update({name: verl_metric(value) for name, value in shaper_metrics.items()})
        metrics.update({name: verl_metric(value, how) for name, (value, how) in call.loss_metrics.items()})
        return loss, metrics

    ppo_loss._maspo_verl_hook = True
    ppo_loss._maspo_verl_wrapped = verl_ppo_loss
    return ppo_loss


def measured_lookup(verl_lookup):
    """Wrap verl's ``get_policy_loss_fn``: inside a hooked ``ppo_loss`` call, the policy loss it
    returns is measured (``maspo_verl.loss_metrics``); outside one, it is verl's own function."""

    @functools.wraps(verl_lookup)
    def get_policy_loss_fn(loss_mode):
        policy_loss = verl_lookup(loss_mode)
        call = current_call()
        if call is None:
            return policy_loss
        return functools.partial(_measured_policy_loss, policy_loss, loss_mode, call)

    get_policy_loss_fn._maspo_verl_hook = True
    get_policy_loss_fn._maspo_verl_wrapped = verl_lookup
    return get_policy_loss_fn


def _measured_policy_loss(policy_loss, loss_mode, call: LossCall, **inputs):
    """The policy loss on ``log_prob + probe`` (probe: zeros with a gradient), then its figures."""
    if not torch.is_grad_enabled():
        return policy_loss(**inputs)
    from . import loss_metrics
    from .compat import aggregation_weights

    probe = torch.zeros_like(inputs["log_prob"], requires_grad=True)
    pg_loss, metrics = policy_loss(**{**inputs, "log_prob": inputs["log_prob"] + probe})
    config = inputs.get("config")
    weights = aggregation_weights(
        loss_mode, inputs.get("loss_agg_mode", "token-mean"), inputs["response_mask"].bool(),
        getattr(config, "global_batch_info", None) or {},
    )  # fmt: skip
    call.loss_metrics = loss_metrics.measure(pg_loss, probe, weights, inputs)
    return pg_loss, metrics


def shape_advantages(config, model_output, data):
    """Return ``(data with shaped advantages, metrics)``; ``(data, {})`` without a shaper."""
    policy_loss = getattr(config, "policy_loss", None)
    name = policy_loss.get("advantage_shaper", NO_SHAPER) if policy_loss is not None else NO_SHAPER
    if name in (None, "", NO_SHAPER):
        return data, {}
    spec, params = resolve_shaper(
        name, policy_loss.get("advantage_shaper_kwargs"), policy_loss.get("advantage_shaper_module"),
        "actor_rollout_ref.actor.policy_loss.",
    )  # fmt: skip
    entropy = model_output.get("entropy", None)
    if spec.needs_entropy and entropy is None:
        raise RuntimeError(
            f"advantage shaper {name!r} needs the current policy's token entropy, but verl's model output has none: "
            "set actor_rollout_ref.actor.calculate_entropy=True (maspo_verl.main_ppo checks this before Ray starts)."
        )
    padded = data.select("response_mask", "old_log_probs", "advantages").to_padded_tensor()
    mask = padded["response_mask"].bool()
    inputs = ShaperInputs(
        advantages=padded["advantages"],
        response_mask=mask,
        old_log_prob=padded["old_log_probs"],
        log_prob=padded_response(model_output["log_probs"], data).detach(),
        entropy=None if entropy is None else padded_response(entropy, data).detach(),
    )
    shaped, metrics = spec.fn(inputs, params)
    shaped = torch.where(mask, shaped, padded["advantages"])
    data = data.copy()  # shallow: the engine's micro-batch stays as it was
    data["advantages"] = to_data_layout(shaped, data["advantages"], data["response_mask"])
    prefix = f"{SHAPER_METRIC_PREFIX}{name}/"
    host = torch.stack([value.float() for value in metrics.values()]).tolist() if metrics else []
    return data, {prefix + key: value for key, value in zip(metrics, host)}
