"""Where maspo-verl relies on verl internals that verl does not promise as an API.

Each function names what it depends on; each raises a RuntimeError naming the broken
assumption as soon as an installed verl differs, instead of failing later or silently.

* ``install_ppo_loss_hook``: verl 0.9.1's actor loss is ``verl.workers.utils.losses.ppo_loss``
  with signature ``(config, model_output, data, dp_group=None)``, bound by name in
  ``verl.workers.engine_workers`` (``partial(ppo_loss, config=...)`` in ``init_model``) and in
  ``verl.trainer.distillation.losses``. We replace that name in those modules with
  ``maspo_verl.hook.hooked_ppo_loss(ppo_loss)``; the engine workers build their loss function
  after our plugin ran (``import verl`` loads it), so they bind the wrapper.
* ``padded_response`` / ``to_data_layout``: verl's padding helpers for the engine's
  no-padding (jagged) micro-batches.
* ``mean_metric``: verl's ``Metric`` with mean aggregation over micro-batches and ranks.
"""

from __future__ import annotations

import importlib
import inspect

import torch

PPO_LOSS_HOME = "verl.workers.utils.losses"
PPO_LOSS_USERS = ("verl.workers.engine_workers", "verl.trainer.distillation.losses")
PPO_LOSS_PARAMETERS = ["config", "model_output", "data", "dp_group"]


def install_ppo_loss_hook() -> None:
    """Put ``hooked_ppo_loss`` in place of verl's ``ppo_loss`` wherever verl binds it (idempotent)."""
    from .hook import hooked_ppo_loss

    home = importlib.import_module(PPO_LOSS_HOME)
    original = getattr(home, "ppo_loss", None)
    if original is None:
        raise RuntimeError(f"maspo-verl: {PPO_LOSS_HOME}.ppo_loss is gone; advantage shapers and BAPO need it")
    original = getattr(original, "_maspo_verl_wrapped", original)
    parameters = list(inspect.signature(original).parameters)
    if parameters != PPO_LOSS_PARAMETERS:
        raise RuntimeError(
            f"maspo-verl: {PPO_LOSS_HOME}.ppo_loss takes {parameters}, not {PPO_LOSS_PARAMETERS} as in verl 0.9.1"
        )
    wrapper = hooked_ppo_loss(original)
    for name in (PPO_LOSS_HOME, *PPO_LOSS_USERS):
        module = importlib.import_module(name)
        bound = getattr(module, "ppo_loss", None)
        if bound is None:
            raise RuntimeError(f"maspo-verl: {name} no longer binds ppo_loss by name; the loss hook cannot reach it")
        if getattr(bound, "_maspo_verl_hook", False):
            continue
        if bound is not original:
            raise RuntimeError(f"maspo-verl: {name}.ppo_loss is not verl's {PPO_LOSS_HOME}.ppo_loss; refusing to wrap it")
        module.ppo_loss = wrapper


def padded_response(tensor: torch.Tensor, data) -> torch.Tensor:
    """(batch, response_len) view of a model output (jagged or flat) for this micro-batch."""
    from verl.workers.utils.padding import no_padding_2_padding

    return no_padding_2_padding(tensor, data)


def to_data_layout(padded: torch.Tensor, like: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Back to the layout of ``like``: jagged when the micro-batch is jagged, else padded."""
    if not like.is_nested:
        return padded.to(like.dtype)
    from verl.workers.utils.padding import response_to_nested

    return response_to_nested(padded.to(like.dtype), response_mask)


def mean_metric(value: float):
    from verl.utils.metric import AggregationType, Metric

    return Metric(value=value, aggregation=AggregationType.MEAN)
