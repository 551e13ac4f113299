"""Before a sweep spends GPU-hours: what it will run and cost (`--plan`; on the kit, what it will run),
and whether every run passes the checks verl would otherwise fail in the middle of the sweep (`--dry-run`).

`--plan` prints each run's memory estimate per GPU (maspo_verl/preflight/memory.py, for the card
`--gpu-memory-gb` names) and estimates its cost from the recipe's sizes, with two stated
assumptions the user can change:
- the mean sequence (prompt + response) is `fill` of the maximum lengths;
- the cluster processes `throughput` tokens per second per GPU over a whole training step
  (generation, log-probs and update: what verl logs as `perf/throughput`; read it off the first
  steps of a real run and plan again).
Tokens per run = training steps x train_batch_size x n x mean sequence
               + validations x validation problems x val n x mean sequence
               + the final evaluation: validation problems x eval k x mean sequence,
and GPU-hours = tokens / throughput / 3600, whatever the number of GPUs (wall hours divide it by them).
Generation-only work (validation, evaluation) runs faster per token than a training step, so the
estimate leans high there.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import ListConfig, OmegaConf


def run_config(spec, out: Path):
    """The resolved config a run of the sweep would train with."""
    from ..launch import base_overrides, compose_config
    from ..preflight import check_algorithm_config

    config = compose_config([*base_overrides(spec.directory(out)), *spec.overrides()])
    check_algorithm_config(config)
    OmegaConf.resolve(config)
    return config


def _rows(files) -> int | None:
    """Rows of the parquet files, or None when one is missing or remote."""
    import pyarrow.parquet as pq

    total = 0
    for path in files if isinstance(files, (list, ListConfig)) else [files]:
        local = Path(str(path)).expanduser()
        if not local.is_file():
            return None
        total += pq.ParquetFile(local).metadata.num_rows
    return total


def estimate(config, eval_k: int | None, throughput: float, fill: float) -> dict:
    """Tokens, GPU-hours and wall hours of one run (see the module docstring)."""
    data, trainer, rollout = config.data, config.trainer, config.actor_rollout_ref.rollout
    sequence = fill * (data.max_prompt_length + data.max_response_length)
    steps = int(trainer.total_training_steps)
    gpus = int(trainer.nnodes) * int(trainer.n_gpus_per_node)
    train = steps * data.train_batch_size * rollout.n * sequence
    problems = _rows(data.val_files)
    validations = (steps // trainer.test_freq if trainer.test_freq > 0 else 0) + int(bool(trainer.val_before_train))
    held_out = None if problems is None else problems * sequence * (validations * rollout.val_kwargs.n + (eval_k or rollout.val_kwargs.n))  # fmt: skip
    tokens = train + (held_out or 0)
    gpu_hours = tokens / throughput / 3600
    return {"steps": steps, "gpus": gpus, "train_tokens": train, "held_out_tokens": held_out,
            "validation_problems": problems, "gpu_hours": gpu_hours, "wall_hours": gpu_hours / gpus}  # fmt: skip


def print_plan(specs: list, throughput: float, fill: float, out: Path = Path("outputs/bench"), log=print) -> float:
    """Each run, its overrides, its key settings and (recipe runs) its estimated cost; returns the total
    GPU-hours (0 for the kit, whose runs take minutes of CPU each and are not estimated)."""
    if throughput <= 0 or not 0 < fill <= 1:
        raise ValueError(f"--throughput {throughput} must be > 0 and --fill {fill} in (0, 1]")
    total, missing = 0.0, False
    kit = specs[0].kind == "kit"
    log(f"{len(specs)} runs" + ("" if kit else f"; assumptions: {throughput:g} tokens/s per GPU over a step, mean "
                                f"sequence {fill:g} of the maximum lengths (maspo_verl/bench/plan.py)"))  # fmt: skip
    for spec in specs:
        config = run_config(spec, out)
        actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
        steps = int(config.trainer.total_training_steps)
        log(f"\n{spec.name}\n  overrides  {' '.join(spec.overrides())}\n"
            f"  model      {config.actor_rollout_ref.model.path}\n"
            f"  loss       {actor.policy_loss.loss_mode} (advantages {config.algorithm.adv_estimator}), lr {actor.optim.lr}, "
            f"{steps} steps of {config.data.train_batch_size} prompts x {rollout.n}, mini-batch "
            f"{actor.ppo_mini_batch_size}, {actor.ppo_epochs} epoch(s)\n"
            f"  lengths    prompt {config.data.max_prompt_length}, response {config.data.max_response_length}")  # fmt: skip
        if kit:
            continue
        cost = estimate(config, getattr(spec, "eval_k", None), throughput, fill)
        total += cost["gpu_hours"]
        missing |= cost["held_out_tokens"] is None
        held_out = ("validation files missing: not counted" if cost["held_out_tokens"] is None
                    else f"{cost['validation_problems']} validation problems")  # fmt: skip
        log(f"  held out   {held_out}\n"
            f"  estimate   {cost['gpu_hours']:.1f} GPU-hours on {cost['gpus']} GPUs = {cost['wall_hours']:.1f} h")  # fmt: skip
        log("\n".join(f"  memory     {line}" for line in memory_lines(config)))
    if kit:
        log(f"\n{len(specs)} runs on the tiny kit (CPU); no GPU-hours to estimate")
        return 0.0
    log(f"\ntotal: {total:.1f} GPU-hours for {len(specs)} runs, one after another"
        + (" (validation and evaluation not counted where their files are missing)" if missing else ""))  # fmt: skip
    return total


def memory_lines(config) -> list[str]:
    """The run's memory estimate per GPU (maspo_verl/preflight/memory.py), its warning or its refusal."""
    from ..preflight.memory import check_memory

    try:
        lines, warnings = check_memory(config)
    except ValueError as error:
        return [f"WOULD BE REFUSED: {error}"]
    return lines + [f"WARNING {warning}" for warning in warnings]


def dry_run(specs: list, out: Path, log=print) -> int:
    """Preflight every run (compose, our checks, verl's validate_config, every config dataclass) before
    any starts; exit status 2 if one fails, each failure named with its run."""
    from .. import preflight

    failures = []
    for index, spec in enumerate(specs):
        try:
            config = run_config(spec, out)
            text = preflight.dry_run(config) if index == 0 else _quiet(preflight.dry_run, config)
            log(f"{spec.name}: OK" + ("" if index == 0 else f" ({text.splitlines()[1].strip()})"))
        except Exception as exc:  # every run is checked; all failures are listed at the end
            failures.append(spec.name)
            log(f"{spec.name}: FAILED: {type(exc).__name__}: {exc}")
    log(f"dry run: {len(specs) - len(failures)} of {len(specs)} runs pass"
        + (f"; failed: {', '.join(failures)}" if failures else ""))  # fmt: skip
    return 2 if failures else 0


def _quiet(function, *args):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args)
