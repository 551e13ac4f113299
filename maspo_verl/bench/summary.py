"""From finished runs to the numbers people compare: per-run figures, per-preset mean and spread
over seeds, and every preset paired with `grpo` on the same seeds.

Per run (from verl's metrics, its dumped held-out generations and the final-model probe):
- `final_sampled_acc`, `final_greedy_acc` (+ `_se`): the final model on the 256 held-out prompts,
  8 samples at T=1 each / greedy; the standard error is over prompts;
- `auc`: the mean of the held-out curve over its validation points (trapezoid rule over steps);
- `best_acc`: the best validation point; `steps_to_target`: the first validation step at or above
  the target accuracy (None if never reached);
- `entropy_end`, `response_length`: mean over the last quarter of the steps;
- `damped_share`: mean share of tokens the method clipped or damped (see `damped_share`);
- `seconds_per_step`: median of verl's `timing_s/step`; `startup_seconds`: from the run's launch in
  the sweep's Ray session to its first training step (validation at step 0 included).
Per preset: mean, standard deviation and standard error over seeds, and the failed runs.
Paired: (preset - grpo) per seed, then mean and standard error of those differences.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..launch import RunResult
from .sweep import run_directory

ENTROPY = "actor/entropy"
LENGTH = "response_length/mean"
STEP_SECONDS = "timing_s/step"
BASELINE = "grpo"
COMPARED = ["final_sampled_acc", "final_greedy_acc", "auc", "best_acc"]
FIGURES = COMPARED + ["steps_to_target", "entropy_end", "response_length", "damped_share", "seconds_per_step",
                      "startup_seconds"]  # fmt: skip


def damped_share(data: dict) -> float | None:
    """Share of a step's tokens whose update the method clipped or damped: MASPO's gated tokens
    (positive and negative), DAC's and BAPO's clipped tokens (both sides), verl's `pg_clipfrac`
    for its own losses. Different mechanisms, one question: how much of the batch was held back."""
    for prefix in ("actor/maspo/gated_frac_", "actor/dac/clip_frac_", "actor/bapo/clip_frac_"):
        parts = [value for key, value in data.items() if key.startswith(prefix)]
        if parts:
            return float(sum(parts))
    return data.get("actor/pg_clipfrac")


def read_steps(metrics_file: Path) -> dict[int, dict]:
    """{step: metrics} of a run's `metrics.jsonl`, in step order (records merged as RunResult does)."""
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    return dict(sorted(RunResult(records).steps().items()))


def held_out_curve(val_dir: Path) -> dict[int, tuple[float, float]]:
    """{step: (mean accuracy, standard error over prompts)} from verl's dumped validation generations."""
    curve = {}
    for path in sorted(val_dir.glob("*.jsonl"), key=lambda p: int(p.stem)):
        per_prompt = defaultdict(list)
        for line in path.read_text().splitlines():
            row = json.loads(line)
            per_prompt[row["input"]].append(float(row["acc"] if "acc" in row else row["score"]))
        means = [sum(scores) / len(scores) for scores in per_prompt.values()]
        spread = statistics.stdev(means) / math.sqrt(len(means)) if len(means) > 1 else float("nan")
        curve[int(path.stem)] = (sum(means) / len(means), spread)
    return curve


def _tail_mean(steps: dict[int, dict], key: str) -> float | None:
    values = [data[key] for data in steps.values() if key in data]
    if not values:
        return None
    tail = values[-max(1, len(values) // 4) :]
    return sum(tail) / len(tail)


def run_figures(run_dir: Path, result: dict, target: float) -> dict:
    """The per-run figures of a finished (`done`) run."""
    steps = read_steps(run_dir / "metrics.jsonl")
    curve = held_out_curve(run_dir / "val")
    points = sorted(curve)
    accuracies = [curve[step][0] for step in points]
    if len(points) > 1:
        area = sum((b - a) * (curve[a][0] + curve[b][0]) / 2 for a, b in zip(points, points[1:]))
        auc = area / (points[-1] - points[0])
    else:
        auc = accuracies[0] if accuracies else None
    damped = [share for share in map(damped_share, steps.values()) if share is not None]
    seconds = [data[STEP_SECONDS] for data in steps.values() if STEP_SECONDS in data]
    return {
        **{
            key: result[key]
            for key in ("final_sampled_acc", "final_sampled_acc_se", "final_greedy_acc", "final_greedy_acc_se")
        },  # fmt: skip
        "auc": auc,
        "best_acc": max(accuracies) if accuracies else None,
        "steps_to_target": next((step for step in points if curve[step][0] >= target), None),
        "entropy_end": _tail_mean(steps, ENTROPY),
        "response_length": _tail_mean(steps, LENGTH),
        "damped_share": sum(damped) / len(damped) if damped else None,
        "seconds_per_step": statistics.median(seconds) if seconds else None,
        "startup_seconds": result.get("startup_seconds"),
        "curve": {str(step): list(curve[step]) for step in points},
    }


def spread(values: list) -> dict:
    """Mean, standard deviation and standard error over seeds of the values that exist."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "se": None, "n": 0}
    std = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "std": std,
            "se": std / math.sqrt(len(present)) if std is not None else None, "n": len(present)}  # fmt: skip


def summarize(results: dict, out: Path, target: float) -> dict:
    """{regime: {"presets": {preset: {...}}, "paired": {preset: {...}}}} over every result."""
    runs = defaultdict(lambda: defaultdict(dict))  # regime -> preset -> seed -> figures or None (failed)
    failures = defaultdict(lambda: defaultdict(list))
    for result in results.values():
        spec = result["run"]
        run_dir = run_directory(out, spec["regime"], spec["preset"], spec["seed"])
        if result["status"] == "done":
            runs[spec["regime"]][spec["preset"]][spec["seed"]] = run_figures(run_dir, result, target)
        else:
            failures[spec["regime"]][spec["preset"]].append(spec["seed"])
    summary = {}
    for regime in sorted(set(runs) | set(failures)):
        presets = sorted(set(runs[regime]) | set(failures[regime]))
        table = {}
        for preset in presets:
            seeds = runs[regime][preset]
            table[preset] = {
                "seeds": sorted(seeds),
                "failed_seeds": sorted(failures[regime][preset]),
                **{figure: spread([seeds[s][figure] for s in seeds]) for figure in FIGURES},
            }
        summary[regime] = {"target": target, "presets": table, "paired": paired(runs[regime]),
                           "runs": {p: {str(s): f for s, f in runs[regime][p].items()} for p in presets}}  # fmt: skip
    return summary


def paired(by_preset: dict) -> dict:
    """Each preset minus grpo on the seeds both finished: mean difference and its standard error."""
    baseline = by_preset.get(BASELINE, {})
    out = {}
    for preset, seeds in by_preset.items():
        if preset == BASELINE:
            continue
        common = sorted(set(seeds) & set(baseline))
        out[preset] = {"seeds": common}
        for figure in COMPARED:
            out[preset][figure] = spread([seeds[s][figure] - baseline[s][figure] for s in common])
    return out


def _cell(stat: dict, digits: int = 3) -> str:
    """`mean ± standard error` over seeds (the mean alone for one seed)."""
    if stat["mean"] is None:
        return "-"
    return (
        f"{stat['mean']:.{digits}f}" if stat["se"] is None else f"{stat['mean']:.{digits}f} ± {stat['se']:.{digits}f}"
    )


def _run_cell(figures: dict, key: str) -> str:
    return f"{figures[key]:.3f} ± {figures[key + '_se']:.3f}"


def markdown(summary: dict) -> str:
    """The summary as markdown tables, one section per regime."""
    lines = []
    for regime, block in summary.items():
        lines += [f"### Regime `{regime}`", "",
                  "Mean ± standard error over seeds (n = seeds that finished; the standard deviations are in "
                  "summary.json). Accuracies on the 256 held-out prompts; target for steps-to-target: "
                  f"{block['target']:.2f}.", "",
                  "| preset | n | final acc (T=1, mean@8) | final greedy acc | AUC | best acc | steps to target "
                  "| entropy (end) | response length | clipped/damped share | s / step | start-up s | failed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for preset, row in block["presets"].items():
            failed = ", ".join(f"seed {s}" for s in row["failed_seeds"]) or ""
            lines.append(
                f"| {preset} | {len(row['seeds'])} | {_cell(row['final_sampled_acc'])} | {_cell(row['final_greedy_acc'])} "
                f"| {_cell(row['auc'])} | {_cell(row['best_acc'])} | {_cell(row['steps_to_target'], 1)} "
                f"| {_cell(row['entropy_end'])} | {_cell(row['response_length'], 1)} | {_cell(row['damped_share'])} "
                f"| {_cell(row['seconds_per_step'], 2)} | {_cell(row['startup_seconds'], 1)} | {failed} |"
            )
        if block["paired"]:
            lines += ["", f"Paired with `{BASELINE}` on the same seeds: mean difference ± standard error of the "
                      "per-seed differences (a difference within about two standard errors of 0 is not a finding).", "",
                      "| preset | seeds | Δ final acc | Δ final greedy acc | Δ AUC | Δ best acc |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
            for preset, row in block["paired"].items():
                cells = []
                for figure in COMPARED:
                    stat = row[figure]
                    se = "" if stat["se"] is None else f" ± {stat['se']:.3f}"
                    cells.append("-" if stat["mean"] is None else f"{stat['mean']:+.3f}{se}")
                lines.append(f"| {preset} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
        lines += ["", "Every run: the final model's accuracy ± its standard error over the held-out prompts.", "",
                  "| preset | seed | final acc (T=1, mean@8) | final greedy acc | held-out curve (step: mean@n) |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for preset, seeds in block["runs"].items():
            for seed, figures in seeds.items():
                curve = ", ".join(f"{step}: {point[0]:.3f}" for step, point in figures["curve"].items())
                lines.append(f"| {preset} | {seed} | {_run_cell(figures, 'final_sampled_acc')} "
                             f"| {_run_cell(figures, 'final_greedy_acc')} | {curve} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)
