"""`preflight(config)`: every family's checks, in order, on the driver before Ray starts."""

from __future__ import annotations

from typing import Any, Callable

from . import agent_loop, algorithm, batch_sizes, caveats, data, keys, memory, parallelism, presets, rollout, trackers

# (config, what the steps before it found, dry_run) -> what it found
Step = Callable[[Any, dict, bool], dict]

# In this order, and the first refusal stops the run: the preset's loss, recipe and overlays, the trainer, settings verl would ignore, the
# agent loop and sequence parallelism (no file read), the data files, the batch sizes, the rollout's
# context length, the reward and the prompt templates it must read, the attention packages, the
# memory estimate, the trackers, then the warnings (which need the data-parallel size and the
# memory estimate's). A new family of checks is a module with a step function and a line here.
STEPS: list[Step] = [
    presets.presets_step,
    algorithm.trainer_step,
    keys.keys_step,
    agent_loop.agent_loop_step,
    parallelism.sequence_parallel_step,
    data.files_step,
    batch_sizes.batch_step,
    rollout.rollout_lengths_step,
    data.reward_step,
    data.templates_step,  # the reward reads the data's prompt template
    parallelism.attention_step,
    memory.memory_step,
    trackers.trackers_step,
    caveats.warnings_step,
]


def preflight(config, dry_run: bool = False) -> dict:
    """The cheap checks, on the driver, before Ray starts. Returns what they measured.

    `dry_run=True` on a machine without CUDA reports a missing attention package instead of
    refusing: the GPU nodes the dry run prepares for may have it.
    """
    found: dict = {}
    for step in STEPS:
        found.update(step(config, found, dry_run))
    return found
