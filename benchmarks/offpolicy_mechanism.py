"""How far each loss lets a sweep's updates go off-policy, from the per-step metrics every loss logs.

Per preset of one regime of a sweep (`python -m maspo_verl.bench --out <dir>`), mean over its
seeds of the per-step mean (and of the run's largest value for `max`) of:
- `actor/ratio/<quadrant>/q90` and `/max`: the ratio's 90th percentile and largest value in the
  quadrants where a trust region acts (A>0, r>1 and A<0, r>1);
- `actor/pg_weight/neg_above_share`: the share of the gradient carried by A<0, r>1 tokens;
- `actor/pg_weight/removed`: the policy-gradient weight the loss removed relative to -A·r;
- `actor/maspo/gate_mean`: MASPO's mean gate (its variants' too).
And a PNG of the q90s, the A<0, r>1 share and the weight removed against the training step
(mean over seeds).

    python benchmarks/offpolicy_mechanism.py /work/bench_runs/stress8 --regime stress --png docs/img/x.png
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from maspo_verl.bench.plots import preset_colors  # noqa: E402
from maspo_verl.bench.summary import read_steps  # noqa: E402
from maspo_verl.bench.sweep import finished_runs  # noqa: E402

PER_STEP = {  # column -> metric, averaged over a run's steps
    "A>0,r>1 q90": "actor/ratio/pos_above/q90",
    "A<0,r>1 q90": "actor/ratio/neg_above/q90",
    "A<0,r>1 share of gradient": "actor/pg_weight/neg_above_share",
    "PG weight removed": "actor/pg_weight/removed",
    "gate mean": "actor/maspo/gate_mean",
}
LARGEST = {"A>0,r>1 max": "actor/ratio/pos_above/max", "A<0,r>1 max": "actor/ratio/neg_above/max"}
PANELS = ["actor/ratio/pos_above/q90", "actor/ratio/neg_above/q90", "actor/pg_weight/neg_above_share",
          "actor/pg_weight/removed"]  # fmt: skip
UNPLOTTED = {"lr0"}  # no update: every ratio 1


def runs_of(out: Path, regime: str) -> dict:
    """{preset: [steps of each finished seed]}."""
    return {preset: [read_steps(run_dir / "metrics.jsonl") for run_dir in seeds.values()]
            for preset, seeds in finished_runs(out, regime).items()}  # fmt: skip


def run_figure(steps: dict, key: str, reduce) -> float | None:
    values = [data[key] for data in steps.values() if key in data]
    return reduce(values) if values else None


def table(runs: dict) -> list[str]:
    columns = list(PER_STEP) + list(LARGEST)
    lines = ["| preset | seeds | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for preset, seeds in sorted(runs.items()):
        cells = []
        for column in columns:
            key, reduce = (PER_STEP[column], statistics.fmean) if column in PER_STEP else (LARGEST[column], max)
            values = [v for v in (run_figure(steps, key, reduce) for steps in seeds) if v is not None]
            cells.append(f"{statistics.fmean(values):.3f}" if values else "-")
        lines.append(f"| {preset} | {len(seeds)} | " + " | ".join(cells) + " |")
    return lines


def plot(runs: dict, png: Path, title: str) -> None:
    colors = preset_colors(sorted(runs))  # before leaving any out: the colours of the bench's own plot
    runs = {preset: seeds for preset, seeds in runs.items() if preset not in UNPLOTTED}
    figure, axes = plt.subplots(1, len(PANELS), figsize=(4.6 * len(PANELS), 4.2))
    for ax, key in zip(axes, PANELS):
        for preset, seeds in sorted(runs.items()):
            steps = sorted({s for run in seeds for s in run if key in run[s]})
            means = [statistics.fmean(run[s][key] for run in seeds if s in run and key in run[s]) for s in steps]
            if steps:
                ax.plot(steps, means, label=preset, color=colors[preset], linewidth=2.2 if preset in ("grpo", "maspo") else 1.2)  # fmt: skip
        ax.set(title=key.removeprefix("actor/"), xlabel="training step")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(png, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--regime", default="stress")
    parser.add_argument("--png", type=Path, default=None, help="write the per-step plot here")
    args = parser.parse_args()
    runs = runs_of(args.out, args.regime)
    if not runs:
        parser.error(f"{args.out}: no finished run in {args.regime}/ (a folder of `python -m maspo_verl.bench --out`)")
    print("\n".join(table(runs)))
    if args.png:
        plot(runs, args.png, f"regime '{args.regime}': how far updates go off-policy (mean over seeds)")
        print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
