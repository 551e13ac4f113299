"""Records, in verl's own worker processes, what a recipe run really did (tests/test_recipes_cpu.py).

Imported in every process that imports verl through verl's `VERL_USE_EXTERNAL_MODULES` (an
environment variable, so the run's config stays the recipe's). It wraps, as each is imported:

- `verl.workers.utils.losses.ppo_loss`, called once per micro-batch of every actor update: one
  JSON line per call with the rank, the micro-batch's sequences and tokens, the flags the FSDP
  engine read from it (use_remove_padding, use_dynamic_bsz and the token budget), the loss mode
  and aggregation, and whether rollout-correction weights reached the loss;
- `transformers.PreTrainedModel.gradient_checkpointing_enable`, which verl's FSDP engine calls
  when `model.enable_gradient_checkpointing` is on: one line per call.

Every process also writes one line when it imports the probe, with the transformers version it
will import (the one first on its sys.path).

Lines go to `$MASPO_RECIPE_PROBE_DIR/<pid>.jsonl`. It relies on those two names (verl 0.9.1,
transformers 5): if either moves, the wrapped call is never recorded and the test says so.
"""

import importlib.abc
import importlib.machinery
import importlib.metadata
import json
import os
import sys

PROBE_DIR = os.environ.get("MASPO_RECIPE_PROBE_DIR")
# the transformers this process imports (first on sys.path), read without importing it
TRANSFORMERS = importlib.metadata.version("transformers")


def record(event: str, **fields) -> None:
    fields.update(event=event, pid=os.getpid(), transformers=TRANSFORMERS)
    with open(os.path.join(PROBE_DIR, f"{os.getpid()}.jsonl"), "a") as out:
        out.write(json.dumps(fields) + "\n")


def _sequence_lengths(data) -> list[int]:
    input_ids = data["input_ids"]
    if input_ids.is_nested:
        return input_ids.offsets().diff().tolist()
    return data["attention_mask"].sum(-1).tolist()


def _wrap_ppo_loss(module) -> None:
    import torch.distributed as dist
    from verl.utils import tensordict_utils as tu

    ppo_loss = module.ppo_loss

    def recorded_ppo_loss(config, model_output, data, dp_group=None):
        lengths = _sequence_lengths(data)
        record(
            "micro_batch",
            rank=dist.get_rank() if dist.is_initialized() else 0,
            sequences=len(lengths),
            tokens=sum(lengths),
            mini_batch_tokens=int(data["batch_num_tokens"]),  # response tokens of the whole mini-batch, all ranks
            use_remove_padding=bool(tu.get_non_tensor_data(data=data, key="use_remove_padding", default=None)),
            use_dynamic_bsz=bool(tu.get_non_tensor_data(data=data, key="use_dynamic_bsz", default=None)),
            max_token_len_per_gpu=tu.get_non_tensor_data(data=data, key="max_token_len_per_gpu", default=None),
            loss_mode=config.policy_loss.get("loss_mode", "vanilla"),
            clip_ratio_high=config.clip_ratio_high,  # tells dapo (0.28) from grpo (0.2), both `vanilla`
            loss_agg_mode=config.loss_agg_mode,
            rollout_is_weights="rollout_is_weights" in data.keys(),
        )
        return ppo_loss(config, model_output, data, dp_group=dp_group)

    module.ppo_loss = recorded_ppo_loss


def _wrap_gradient_checkpointing(module) -> None:
    enable = module.PreTrainedModel.gradient_checkpointing_enable

    def recorded_enable(self, *args, **kwargs):
        record("gradient_checkpointing", model=type(self).__name__)
        return enable(self, *args, **kwargs)

    module.PreTrainedModel.gradient_checkpointing_enable = recorded_enable


WRAPPERS = {
    "verl.workers.utils.losses": _wrap_ppo_loss,
    "transformers.modeling_utils": _wrap_gradient_checkpointing,
}


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader, wrap):
        self.loader, self.wrap = loader, wrap

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.wrap(module)


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs a module's wrapper right after the module is first executed (nothing is imported early)."""

    def find_spec(self, name, path, target=None):
        if name not in WRAPPERS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None:
            spec.loader = _WrappingLoader(spec.loader, WRAPPERS[name])
        return spec


if PROBE_DIR and not any(isinstance(finder, _PatchAfterImport) for finder in sys.meta_path):
    for name in WRAPPERS:
        if name in sys.modules:  # already imported in this process: wrap it now
            WRAPPERS[name](sys.modules[name])
    sys.meta_path.insert(0, _PatchAfterImport())
    record("process", argv=sys.argv[:1])
