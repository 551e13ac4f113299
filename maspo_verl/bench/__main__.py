"""`python -m maspo_verl.bench`: presets x seeds through verl's trainer, compared with the statistics they need.

    python -m maspo_verl.bench                                   # the tiny kit on CPU: main presets x 8 seeds + 3 controls
    python -m maspo_verl.bench --regimes standard                # 4 updates per rollout, where the trust region barely acts
    python -m maspo_verl.bench --presets all --seeds 0,1,2       # every preset: verl's other losses and MASPO's ablations too
    python -m maspo_verl.bench --presets all --plan              # the runs and their configs; runs nothing
    python -m maspo_verl.bench --report-only                     # tables and plots from finished runs

    python -m maspo_verl.bench --recipe paper_1p5b --presets grpo,dapo,maspo --seeds 0,1,2 [overrides ...]
    python -m maspo_verl.bench --recipe paper_1p5b ... --plan      # the runs, their configs, memory and GPU-hours; runs nothing
    python -m maspo_verl.bench --recipe paper_1p5b ... --dry-run   # preflight every run before any starts

Writes `<out>/<regime or recipe>/<preset>/seed<k>/` per run (verl's metrics JSONL, the final model,
result.json with the held-out probes or the evaluator's summary), then `<out>/summary.md`,
`<out>/summary.json` and `<out>/<regime>.png`. Started again, it skips the finished runs (and verl
resumes an interrupted recipe run from its last checkpoint). It measures; it does not assume any
method wins, and on the kit it says whether the instrument passed its controls.

Exit status (with or without --report-only): 0 when every run finished and, on the kit, every
instrument check passed; 1 when a run failed (--retry-failed runs it again); 3 when every run
finished but an instrument check of a regime did not pass (a banner above that regime's
comparisons and at the end of the output says which): none of its comparisons is a finding;
2 for a bad setting, or a --dry-run that found a run that would fail.
"""

import argparse
import json
import os
import sys
from pathlib import Path

from hydra.errors import ConfigCompositionException

from ..preflight.memory import GPU_MEMORY_ENV
from ..refusal import REFUSALS, debugging, refuse
from .plan import dry_run, print_plan
from .plots import plot_regime
from .summary import CHECK_FAILED_STATUS, banner, failed_checks, markdown, paper_tables, summarize
from .sweep import (
    DEFAULT_TARGETS,
    DEFAULT_TASK,
    KIT_PRESETS,
    MAIN_PRESETS,
    REGIMES,
    BenchInputError,
    available_presets,
    default_workers,
    plan_kit,
    plan_recipes,
    read_result,
    run_sweep,
    warm_start_probe,
)

# eight: the smallest number at which the minimal detectable difference of the standard regime's
# measured paired spread is at most 0.05 (docs/benchmarks.md); three resolve about 0.13
DEFAULT_SEEDS = [0, 1, 2, 3, 4, 5, 6, 7]


def _list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list ({exc})") from exc

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="with --recipe: Hydra overrides for every run (verl keys)")
    parser.add_argument("--presets", type=_list(str), default=None,
                        help=f"comma-separated presets of configs/algorithm, or 'all' (default: {','.join(MAIN_PRESETS)})")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar='"NAME=PRESET OVERRIDE ..."',
                        help="also run a preset with overrides of its own, under NAME (repeatable)")  # fmt: skip
    parser.add_argument("--seeds", type=_list(int), default=DEFAULT_SEEDS,
                        help=f"comma-separated seeds (default {','.join(map(str, DEFAULT_SEEDS))})")  # fmt: skip
    kit = parser.add_argument_group("the tiny kit (the default)")
    # stress: the paper's 16 updates per rollout, and the one regime where a trust region changes the outcome
    # (in standard the harm control ends level with grpo, so that check fails: docs/mini-benchmark.md, "The regimes")
    kit.add_argument("--regimes", type=_list(str), default=["stress"],
                     help=f"comma-separated, from {', '.join(REGIMES)} (default stress)")  # fmt: skip
    kit.add_argument("--task", default=DEFAULT_TASK, help=f"the kit's task, from {', '.join(KIT_PRESETS)} "
                     f"(default {DEFAULT_TASK}; docs/mini-benchmark.md says why)")  # fmt: skip
    # 5: the headline averages the probes of a run's last third; three of them (20, 25, 30 of 30 steps)
    # left an A/A sd of 0.032 in the stress regime, two (20, 30) 0.045 (docs/mini-benchmark.md#the-headline-figure)
    kit.add_argument("--probe-every", type=int, default=5,
                     help="probe held-out accuracy every N steps, and at the end (default 5)")  # fmt: skip
    kit.add_argument(
        "--no-controls", action="store_true", help="skip the instrument's controls (lr0, replicate, no_trust_region)"
    )
    recipe = parser.add_argument_group("a paper recipe (GPU users)")
    recipe.add_argument("--recipe", type=_list(str), default=None,
                        help="comma-separated recipes of configs/recipe: sweep them instead of the kit")  # fmt: skip
    recipe.add_argument("--eval-k", type=int, default=None,
                        help="samples per problem for the final evaluation (default: the recipe's val_kwargs.n)")  # fmt: skip
    parser.add_argument("--plan", action="store_true",
                        help="print the runs and their configs (with --recipe: and GPU-hours); run nothing")  # fmt: skip
    recipe.add_argument("--throughput", type=float, default=1000.0,
                        help="--plan's assumption: tokens per second per GPU over a whole step (verl logs it as "
                             "perf/throughput; default 1000)")  # fmt: skip
    recipe.add_argument("--gpu-memory-gb", type=float, default=None,
                        help="the GPU memory (GiB) the per-GPU memory estimate checks against (default: this "
                             "machine's GPU, else 80)")  # fmt: skip
    recipe.add_argument("--fill", type=float, default=0.5,
                        help="--plan's assumption: mean sequence (prompt + response) as a share of the maximum "
                             "lengths (default 0.5)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="preflight every run (no Ray, no GPU), then stop")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps per run (default: 30 on the kit, the recipe's own with --recipe)")  # fmt: skip
    parser.add_argument("--target", type=float, default=None,
                        help="held-out accuracy for steps-to-target (kit default: the task's, add 0.65, chain 0.3)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    parser.add_argument("--workers", type=int, default=None,
                        help="Ray sessions running side by side (default: 2 for kit runs on 2 or more cores, 1 for recipes)")  # fmt: skip
    parser.add_argument("--report-only", action="store_true", help="only summarize and plot the finished runs")
    parser.add_argument("--debug", action="store_true", help="a refusal shows its traceback")
    return parser


def build_specs(args) -> list:
    presets = available_presets() if args.presets == ["all"] else args.presets or MAIN_PRESETS
    if args.recipe:
        return plan_recipes(args.recipe, presets, args.seeds, args.steps, args.overrides, args.variant, args.eval_k)
    if args.overrides:
        raise BenchInputError(
            f"{' '.join(args.overrides)}: Hydra overrides go with --recipe; on the kit, use --variant"
        )
    return plan_kit(presets, args.seeds, args.regimes, args.steps or 30, args.probe_every, args.variant,
                    controls=not args.no_controls, task=args.task)  # fmt: skip


def report(specs, out: Path, target: float | None, log=print) -> dict:
    results = {spec.name: result for spec in specs if (result := read_result(spec.directory(out))) is not None}
    kind = specs[0].kind
    warm = warm_start_probe(out, specs[0].task) if kind == "kit" else None
    summary = summarize(results, out, warm, target, kind)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    text = markdown(summary) + ("\n" + paper_tables(summary) if kind == "recipe" else "")
    (out / "summary.md").write_text(text)
    titles = {regime: f"Tiny kit on CPU, task '{specs[0].task}', regime '{regime}'" if kind == "kit" else
              f"Recipe '{regime}'" for regime in summary["regimes"]}  # fmt: skip
    plots = [plot_regime(regime, block, out, out / f"{regime}.png", titles[regime], kind)
             for regime, block in summary["regimes"].items()]  # fmt: skip
    log(text)
    log(f"summary: {out / 'summary.md'}, {out / 'summary.json'}; plots: {', '.join(str(p) for p in plots)}")
    if failed_checks(summary):
        log(banner(failed_checks(summary)))  # again last, where the console ends
    return summary


def exit_status(summary: dict) -> int:
    """1 if a run failed, else CHECK_FAILED_STATUS if an instrument check did not pass, else 0."""
    failed_runs = sum(len(row["failed_seeds"]) for block in summary["regimes"].values()
                      for row in block["presets"].values())  # fmt: skip
    if failed_runs:
        return 1
    return CHECK_FAILED_STATUS if failed_checks(summary) else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.gpu_memory_gb is not None:  # read by every run's preflight (maspo_verl/preflight/memory.py)
        os.environ[GPU_MEMORY_ENV] = str(args.gpu_memory_gb)
    try:  # the sweep's input, and with --plan every run's config: refused before anything runs
        specs = build_specs(args)
        if args.workers is not None and args.workers < 1:
            raise BenchInputError(f"--workers {args.workers}: give 1 or more Ray sessions")
        if args.plan:
            print_plan(specs, args.throughput, args.fill, args.out.resolve())
            return 0
    except (*REFUSALS, ConfigCompositionException) as exc:  # BenchInputError is a ValueError
        if debugging(args.debug):
            raise
        return refuse("maspo_verl.bench", exc)
    if args.dry_run:
        return dry_run(specs, args.out.resolve())
    out = args.out.resolve()
    if not args.report_only:
        workers = default_workers(specs) if args.workers is None else args.workers
        run_sweep(specs, out, retry_failed=args.retry_failed, workers=workers)
    target = DEFAULT_TARGETS[args.task] if args.target is None and not args.recipe else args.target
    return exit_status(report(specs, out, target))


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
