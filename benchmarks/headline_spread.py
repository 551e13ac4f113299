"""What each way of narrowing a kit sweep's paired differences buys, measured on finished runs.

For a sweep's folder (`python -m maspo_verl.bench --out <dir>`), per candidate headline figure:
the sd of the per-seed paired differences with grpo (the A/A replicate, the compared presets
pooled as the power goal pools them) and the minimal detectable difference that sd gives at 8
seeds. Candidates: the final probe; the mean of the late probes (the bench's headline, a run's
last third); the same over only the probes a default sweep takes (every 10 steps); the whole
curve's mean (AUC). Then what a larger probe could buy: the probe's own sampling variance of a
final-probe difference (the two runs' squared standard errors over prompts, an upper bound since
the probe's common random numbers correlate the two draws) as a share of the paired variance,
and the sd left with a probe 4 times as large.

    python benchmarks/headline_spread.py /work/bench_runs/stress8 --regime stress
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from maspo_verl.bench import stats
from maspo_verl.bench.summary import BASELINE, held_out_curve, late_mean
from maspo_verl.bench.sweep import CONTROLS, REPLICATE, finished_runs, read_result

LARGER_PROBE = 4  # times the held-out prompts


def load(out: Path, regime: str) -> dict:
    """{preset: {seed: result}} of the regime's finished runs."""
    return {preset: {seed: read_result(run_dir) for seed, run_dir in seeds.items()}
            for preset, seeds in finished_runs(out, regime).items()}  # fmt: skip


def curve(result: dict, warm: dict, every: int | None = None) -> dict:
    """The run's held-out curve, only at multiples of `every` if given (step 0, the warm start, always)."""
    return {step: point for step, point in held_out_curve(result, warm).items() if every is None or step % every == 0}


FIGURES = {
    "final probe": lambda result, warm: result["final_sampled_acc"],
    "late probes (headline)": lambda result, warm: late_mean(curve(result, warm)),
    "late probes, every 10 steps": lambda result, warm: late_mean(curve(result, warm, every=10)),
    "whole curve (mean of probes)": lambda result, warm: statistics.fmean(a for a, _ in curve(result, warm).values()),
}


def differences(runs: dict, preset: str, figure, warm: dict) -> list:
    """The preset minus grpo, seed by seed, in `figure(result, warm)`."""
    seeds = sorted(set(runs[preset]) & set(runs[BASELINE]))
    return [figure(runs[preset][s], warm) - figure(runs[BASELINE][s], warm) for s in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--regime", default="stress")
    parser.add_argument("--seeds", type=int, default=8, help="the MDD at this many seeds (default 8)")
    args = parser.parse_args()
    warm_file, runs = args.out / "warm_start_add.json", load(args.out, args.regime)
    if not warm_file.is_file() or BASELINE not in runs:
        parser.error(f"{args.out}: needs a kit sweep's warm_start_add.json and finished {BASELINE} runs in "
                     f"{args.regime}/ (`python -m maspo_verl.bench --out {args.out} --regimes {args.regime}`)")  # fmt: skip
    warm = json.loads(warm_file.read_text())
    compared = [p for p in runs if p != BASELINE and p not in CONTROLS]
    print(f"{args.out} / {args.regime}: {', '.join(f'{p} {len(s)}' for p, s in sorted(runs.items()))} runs")
    print(f"| figure | A/A sd | compared sd (pooled: {', '.join(compared)}) | MDD at {args.seeds} seeds |")
    print("|---|---|---|---|")
    for name, figure in FIGURES.items():
        replicate = differences(runs, REPLICATE, figure, warm) if REPLICATE in runs else []
        pooled = stats.pooled_sd([differences(runs, p, figure, warm) for p in compared])
        aa = f"{statistics.stdev(replicate):.3f} ({len(replicate)} seeds)" if len(replicate) > 1 else "-"
        mdd = "-" if pooled is None else f"{stats.minimal_detectable_difference(pooled, args.seeds):.3f}"
        print(f"| {name} | {aa} | {'-' if pooled is None else f'{pooled:.3f}'} | {mdd} |")
    # the probe's own share of a final-probe difference's variance, and a larger probe
    print(f"\nThe probe's sampling in the final probe's paired variance (upper bound), and a {LARGER_PROBE}x probe:")
    for preset in [REPLICATE, *compared]:
        if preset not in runs:
            continue
        seeds = sorted(set(runs[preset]) & set(runs[BASELINE]))
        diffs = differences(runs, preset, FIGURES["final probe"], warm)
        if len(diffs) < 2:
            continue
        total = statistics.variance(diffs)
        probe = statistics.fmean(runs[preset][s]["final_sampled_acc_se"] ** 2 + runs[BASELINE][s]["final_sampled_acc_se"] ** 2
                                 for s in seeds)  # fmt: skip
        larger = math.sqrt(max(total - probe * (1 - 1 / LARGER_PROBE), 0.0))
        print(
            f"- {preset}: paired sd {math.sqrt(total):.3f}, the probe's share of its variance at most "
            f"{min(probe / total, 1.0):.0%}; with a {LARGER_PROBE}x probe at least {larger:.3f}"
        )


if __name__ == "__main__":
    main()
