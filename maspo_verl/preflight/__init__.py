"""Checks that run on the driver before Ray starts, and the `--dry-run` of the paper recipes.

`preflight(config)` (called by `maspo_verl.main_ppo` before handing over to verl) runs the
steps of `steps.STEPS`, one module per family of checks:

- `presets`: the preset's loss is registered with the installed verl (else the verl releases
  that have it are named), the recipe sets no key the preset sets, and verl's rollout correction
  gets the rollout's log-probs;
- `keys`: no setting of the actor, rollout, ref or trainer sections is one the installed verl
  would silently ignore (a key it has no field for, or one it reads nowhere), named with the key
  verl does read;
- `agent_loop`: the small-run agent-loop manager (the kit's) runs with verl's synchronous trainer
  and a rule-based reward; no reward worker (`reward.num_workers: 0`) only with that manager;
- `algorithm`: the trainer is verl's v1 trainer (`trainer.use_v1=false`, verl's legacy trainer,
  is refused). Its `check_algorithm_config` (policy-loss keys, loss mode, shaper, DAPO's pieces)
  runs before the config is resolved, by `main_ppo` and the benchmark, not as a step;
- `data`: every train/val file exists, is a readable parquet file and has the columns verl reads
  (`data.prompt_key` as chat messages, `data.reward_fn_key`, `reward_model.ground_truth`); the
  train set holds at least one batch (`data.train_batch_size` prompts); the custom reward
  function (if any) can be loaded and reads the answer format of each file's prompt template;
- `batch_sizes`: batch sizes divide as verl requires for `trainer.nnodes x trainer.n_gpus_per_node`
  GPUs (static micro-batches, dynamic micro-batches, rollout replicas);
- `rollout`: the vLLM server's context length holds prompt + response, and chunked prefill is
  off only when a whole prompt fits in one batch;
- `parallelism`: Ulysses sequence parallelism > 1 runs with flash attention, the only attention
  verl patches it into; on a CUDA run, the package of the attention implementation is installed;
- `memory`: the estimate per GPU (the actor's parameters, gradients and optimizer states,
  sharded or offloaded, vLLM's share, the peak at the weight sync) fits the card; above 90% it
  warns;
- `trackers`: a wandb run has a key (`WANDB_API_KEY` or a login), which every Ray worker gets;
- `caveats`: settings that run but not as a reader would expect raise a `PreflightWarning`
  (shown on the driver, listed by the dry run): a trust region that cannot act (one update per
  rollout, the ratio is 1 at every token), and BAPO choosing its bounds per micro-batch;
- `rehearsal`: `dry_run(config)` (`python -m maspo_verl.main_ppo --dry-run ...`,
  `DRY_RUN=1 bash examples/paper/...`) additionally runs verl's own `validate_config`, builds
  every config dataclass the run builds and prints the resolved key settings. It needs no GPU,
  vLLM or Ray. A dry run on a machine without CUDA cannot know what the GPU nodes have
  installed: a missing attention package is printed as a note there instead of refused.

Each failure raises a ValueError / FileNotFoundError naming the setting or file, its value and
what is allowed: today verl only finds these inside its TaskRunner, after the cluster started.
The commands print it as a refusal (`maspo_verl.refusal`): the message, exit status 2.
"""

from .agent_loop import check_agent_loop
from .algorithm import check_algorithm_config, check_trainer
from .batch_sizes import check_batch_sizes, check_dynamic_batch, check_rollout_replicas, check_static_batch
from .caveats import PreflightWarning, bapo_micro_batch_warnings, preflight_warnings, trust_region_warnings
from .data import REMOTE_PREFIXES, check_data, check_data_file, check_data_templates, check_reward_function
from .keys import check_ignored_keys
from .memory import GPU_MEMORY_ENV, check_memory
from .parallelism import (
    ATTENTION_PACKAGES,
    DEFAULT_ATTENTION,
    FLASH_ATTN_INSTALL,
    HUB_KERNEL_PACKAGE,
    SEQUENCE_PARALLEL_ATTENTION,
    attention_of,
    attention_sections,
    check_attention_packages,
    check_sequence_parallel,
    ulysses_size,
)
from .rehearsal import build_dataclasses, describe, dry_run
from .rollout import check_rollout_lengths
from .steps import STEPS, preflight
from .trackers import check_trackers

__all__ = [
    "GPU_MEMORY_ENV",
    "check_agent_loop",
    "check_ignored_keys",
    "check_memory",
    "check_rollout_lengths",
    "check_trackers",
    "ATTENTION_PACKAGES",
    "DEFAULT_ATTENTION",
    "FLASH_ATTN_INSTALL",
    "HUB_KERNEL_PACKAGE",
    "REMOTE_PREFIXES",
    "SEQUENCE_PARALLEL_ATTENTION",
    "STEPS",
    "PreflightWarning",
    "attention_of",
    "attention_sections",
    "bapo_micro_batch_warnings",
    "build_dataclasses",
    "check_algorithm_config",
    "check_attention_packages",
    "check_batch_sizes",
    "check_data",
    "check_data_file",
    "check_data_templates",
    "check_dynamic_batch",
    "check_reward_function",
    "check_rollout_replicas",
    "check_sequence_parallel",
    "check_static_batch",
    "check_trainer",
    "describe",
    "dry_run",
    "preflight",
    "preflight_warnings",
    "trust_region_warnings",
    "ulysses_size",
]
