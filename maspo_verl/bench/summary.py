"""From finished runs to the numbers people compare, and the checks that say whether the
instrument can compare anything at all.

Per kit run (from the probes in result.json, the sweep's warm-start probe and verl's metrics):
- `final_sampled_acc`, `final_greedy_acc` (+ `_se`): the final model on the held-out prompts,
  mean@8 at T=1 / greedy, standard error over prompts; `final_pass_at_8`: unbiased pass@8;
- `gain`: final sampled accuracy minus the warm start's;
- `auc`: the mean of the held-out curve from step 0 (the warm start) to the last probe (trapezoid
  rule over steps); `best_acc`; `steps_to_target`: the first probed step at or above the target.
Per recipe run (from the evaluator's summary of the final checkpoint and verl's metrics):
- `avg_at_k`, `pass_at_k`: the mean over the recipe's benchmarks (the paper's Avg column), and
  each benchmark's own; `auc`, `best_acc`: of verl's validation curve (mean over benchmarks).
Both: `entropy_end`, `response_length` (mean over the last quarter of the steps); `damped_share`
(mean share of tokens the method clipped or damped, see `damped_share`); `mismatch` (the largest
|p_actor - p_rollout| of any token of the run, verl's `training/rollout_probs_diff_max`: how far
from on-policy the rollout sampled); `seconds_per_step`, `startup_seconds`.

Per preset: mean, standard deviation and standard error over seeds. Paired: preset minus grpo per
seed, with the mean, its standard error and a t confidence interval. The minimal detectable
difference at the sweep's number of seeds. On the kit, the instrument checks: grpo learns (gain >=
LEARNS_BY on every seed), the lr-0 control stays flat, the no-trust-region control comes out
worse than grpo beyond the noise, and the minimal detectable difference is at most MAX_MDD.
Across regimes (or recipes), per preset: the interquartile mean with a stratified bootstrap CI and
the probability of improving on grpo.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..launch import RunResult
from . import stats
from .sweep import CONTROLS, PROBE_SAMPLES, run_directory

ENTROPY = "actor/entropy"
LENGTH = "response_length/mean"
STEP_SECONDS = "timing_s/step"
MISMATCH = "training/rollout_probs_diff_max"
BASELINE = "grpo"
PASS_AT = f"final_pass_at_{PROBE_SAMPLES}"
LEARNS_BY = 0.10  # grpo must gain at least this much held-out accuracy on every seed
MAX_MDD = 0.05  # the largest minimal detectable difference a sweep's seeds may leave
TRAINING = ["entropy_end", "response_length", "damped_share", "mismatch", "seconds_per_step", "startup_seconds"]


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


def held_out_curve(result: dict, warm: dict) -> dict[int, tuple[float, float]]:
    """{step: (sampled accuracy, its standard error over prompts)}: the warm start at step 0, then
    every probed model of the run."""
    curve = {0: (warm["sampled_acc"], warm["sampled_acc_se"])}
    for step, probe in result["probes"].items():
        curve[int(step)] = (probe["sampled_acc"], probe["sampled_acc_se"])
    return dict(sorted(curve.items()))


def validation_curve(steps: dict[int, dict]) -> dict[int, tuple[float, None]]:
    """{step: (mean over benchmarks of verl's held-out accuracy, None)} at every validated step."""
    curve = {}
    for step, data in steps.items():
        values = [v for k, v in data.items() if k.startswith("val-core/") and "/acc/mean@" in k]
        if values:
            curve[step] = (sum(values) / len(values), None)
    return curve


def _tail_mean(steps: dict[int, dict], key: str) -> float | None:
    values = [data[key] for data in steps.values() if key in data]
    if not values:
        return None
    tail = values[-max(1, len(values) // 4) :]
    return sum(tail) / len(tail)


def _curve_figures(curve: dict, target: float | None) -> dict:
    points = sorted(curve)
    if not points:
        return {"auc": None, "best_acc": None, "steps_to_target": None, "curve": {}}
    area = sum((b - a) * (curve[a][0] + curve[b][0]) / 2 for a, b in zip(points, points[1:]))
    return {
        "auc": area / (points[-1] - points[0]) if len(points) > 1 else curve[points[0]][0],
        "best_acc": max(curve[step][0] for step in points),
        "steps_to_target": None if target is None else next((s for s in points if curve[s][0] >= target), None),
        "curve": {str(step): list(curve[step]) for step in points},
    }


def training_figures(steps: dict[int, dict], result: dict) -> dict:
    damped = [share for share in map(damped_share, steps.values()) if share is not None]
    mismatch = [data[MISMATCH] for data in steps.values() if MISMATCH in data]
    seconds = [data[STEP_SECONDS] for data in steps.values() if STEP_SECONDS in data]
    return {
        "entropy_end": _tail_mean(steps, ENTROPY),
        "response_length": _tail_mean(steps, LENGTH),
        "damped_share": sum(damped) / len(damped) if damped else None,
        "mismatch": max(mismatch) if mismatch else None,
        "seconds_per_step": statistics.median(seconds) if seconds else None,
        "startup_seconds": result.get("startup_seconds"),
    }


def kit_figures(run_dir: Path, result: dict, warm: dict, target: float) -> dict:
    """The per-run figures of a finished (`done`) kit run."""
    steps = read_steps(run_dir / "metrics.jsonl")
    finals = ("final_sampled_acc", "final_sampled_acc_se", "final_greedy_acc", "final_greedy_acc_se")
    return {
        **{key: result[key] for key in finals},
        PASS_AT: result["final_pass_at_k"][str(PROBE_SAMPLES)],
        "gain": result["final_sampled_acc"] - warm["sampled_acc"],
        **_curve_figures(held_out_curve(result, warm), target),
        **training_figures(steps, result),
    }


def recipe_figures(run_dir: Path, result: dict, target: float | None) -> dict:
    """The per-run figures of a finished (`done`) recipe run."""
    steps = read_steps(run_dir / "metrics.jsonl")
    k = str(max(int(j) for j in result["pass_at_k"]))
    return {
        "avg_at_k": result["avg_at_k"],
        "pass_at_k": result["pass_at_k"][k],
        "benchmarks": {name: row["avg_at_k"] for name, row in result["benchmarks"].items()},
        "eval_dir": result["eval_dir"],
        **_curve_figures(validation_curve(steps), target),
        **training_figures(steps, result),
    }


# What each kind of sweep compares: the headline figure first, then the other compared figures,
# then the per-preset table's columns (key, header, digits).
KINDS = {
    "kit": {
        "compared": ["final_sampled_acc", "final_greedy_acc", PASS_AT, "auc"],
        "columns": [
            ("final_sampled_acc", "final acc", 3),
            ("final_greedy_acc", "final greedy acc", 3),
            (PASS_AT, f"pass@{PROBE_SAMPLES}", 3),
            ("gain", "gain", "+"),
            ("auc", "AUC", 3),
            ("steps_to_target", "steps to target", 1),
        ],  # fmt: skip
    },
    "recipe": {
        "compared": ["avg_at_k", "pass_at_k", "auc"],
        "columns": [
            ("avg_at_k", "Avg@k", 3),
            ("pass_at_k", "Pass@k", 3),
            ("auc", "validation AUC", 3),
            ("best_acc", "best validation", 3),
        ],  # fmt: skip
    },
}
COMMON_COLUMNS = [("entropy_end", "entropy (end)", 3), ("response_length", "response length", 1),
                  ("damped_share", "clipped/damped share", 3), ("mismatch", "mismatch", "e"),
                  ("seconds_per_step", "s / step", 2), ("startup_seconds", "start-up s", 1)]  # fmt: skip


def spread(values: list) -> dict:
    """Mean, standard deviation and standard error over seeds of the values that exist."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "se": None, "n": 0}
    std = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "std": std,
            "se": std / math.sqrt(len(present)) if std is not None else None, "n": len(present)}  # fmt: skip


def paired(by_preset: dict, compared: list[str] = KINDS["kit"]["compared"]) -> dict:
    """Each preset minus grpo on the seeds both finished: the differences, their mean, standard
    error and 95% t confidence interval."""
    baseline = by_preset.get(BASELINE, {})
    out = {}
    for preset, seeds in by_preset.items():
        if preset == BASELINE:
            continue
        common = sorted(set(seeds) & set(baseline))
        out[preset] = {"seeds": common}
        for figure in compared:
            differences = [seeds[s][figure] - baseline[s][figure] for s in common
                           if seeds[s][figure] is not None and baseline[s][figure] is not None]  # fmt: skip
            _, low, high = stats.paired_t_ci(differences)
            out[preset][figure] = {**spread(differences), "ci": [low, high], "values": differences}
    return out


def power(pairs: dict, seeds: int, figure: str = "final_sampled_acc") -> dict:
    """The minimal detectable difference in `figure` at `seeds` seeds (and at a few others), from the
    spread of the paired differences over seeds, pooled over every compared preset (not the controls)."""
    groups = [row[figure]["values"] for preset, row in pairs.items() if preset not in CONTROLS]
    sd = stats.pooled_sd(groups)
    if sd is None:
        return {"figure": figure, "sd": None, "seeds": seeds, "mdd": None, "by_seeds": {}}
    return {"figure": figure, "sd": sd, "seeds": seeds, "mdd": stats.minimal_detectable_difference(sd, seeds),
            "by_seeds": {str(n): stats.minimal_detectable_difference(sd, n) for n in (3, 4, 5, 6, 8, 10)}}  # fmt: skip


def instrument_checks(runs: dict, pairs: dict, power_figures: dict, warm: dict) -> list[dict]:
    """Whether this regime's kit sweep is an instrument that can tell methods apart: [{check, passed, detail}]."""
    checks = []
    grpo = [runs[BASELINE][s]["gain"] for s in sorted(runs.get(BASELINE, {}))]
    checks.append({"check": "grpo learns", "passed": bool(grpo) and bool(min(grpo) >= LEARNS_BY),
                   "detail": f"gain over the warm start {', '.join(f'{g:+.3f}' for g in grpo) or 'none'} "
                             f"(seeds; needs >= {LEARNS_BY:+.2f} on every seed)"})  # fmt: skip
    if "lr0" in runs:
        gains = [runs["lr0"][s]["gain"] for s in sorted(runs["lr0"])]
        se = warm["sampled_acc_se"]
        checks.append({"check": "negative control (lr 0) stays flat",
                       "passed": bool(gains) and bool(max(abs(g) for g in gains) <= 2 * se),
                       "detail": f"gain {', '.join(f'{g:+.3f}' for g in gains)} (needs |gain| <= 2 x the probe's "
                                 f"standard error, {2 * se:.3f})"})  # fmt: skip
    if "no_trust_region" in pairs:
        row = pairs["no_trust_region"]["final_sampled_acc"]
        low, high = row["ci"]
        checks.append({"check": "harm control (no trust region) comes out worse",
                       "passed": bool(high is not None and high < 0),
                       "detail": f"Δ final acc vs grpo {_signed(row)}, 95% CI "
                                 f"{'-' if low is None else f'[{low:+.3f}, {high:+.3f}]'} (needs the CI below 0)"})  # fmt: skip
    mdd = power_figures["mdd"]
    checks.append({"check": f"power: minimal detectable difference <= {MAX_MDD}",
                   "passed": bool(mdd is not None and mdd <= MAX_MDD),
                   "detail": "no paired differences yet" if mdd is None else
                             f"{mdd:.3f} at {power_figures['seeds']} seeds (sd of paired differences "
                             f"{power_figures['sd']:.3f}; 5% two-sided, 80% power)"})  # fmt: skip
    return checks


def load_runs(results: dict, out: Path, figures):
    """regime -> preset -> seed -> figures (finished runs), and regime -> preset -> failed seeds."""
    runs = defaultdict(lambda: defaultdict(dict))
    failures = defaultdict(lambda: defaultdict(list))
    for result in results.values():
        spec = result["run"]
        run_dir = run_directory(out, spec["regime"], spec["preset"], spec["seed"])
        if result["status"] == "done":
            runs[spec["regime"]][spec["preset"]][spec["seed"]] = figures(run_dir, result)
        else:
            failures[spec["regime"]][spec["preset"]].append(spec["seed"])
    return runs, failures


def summarize(results: dict, out: Path, warm: dict | None = None, target: float | None = None,
              kind: str = "kit") -> dict:  # fmt: skip
    """{"kind", "warm_start", "regimes": {regime: {...}}, "across_regimes": {...}} over every result.
    A kit sweep needs the warm start's probe; a recipe sweep has none. The minimal detectable
    difference of a regime is given at the number of seeds its finished runs have."""
    if kind == "kit":
        figures = lambda run_dir, result: kit_figures(run_dir, result, warm, target)  # noqa: E731
    else:
        figures = lambda run_dir, result: recipe_figures(run_dir, result, target)  # noqa: E731
    compared = KINDS[kind]["compared"]
    columns = [key for key, _, _ in KINDS[kind]["columns"] + COMMON_COLUMNS]
    runs, failures = load_runs(results, out, figures)
    regimes = {}
    for regime in sorted(set(runs) | set(failures)):
        presets = sorted(set(runs[regime]) | set(failures[regime]))
        table = {
            preset: {"seeds": sorted(runs[regime][preset]), "failed_seeds": sorted(failures[regime][preset]),
                     **{figure: spread([f[figure] for f in runs[regime][preset].values()]) for figure in columns}}
            for preset in presets
        }  # fmt: skip
        pairs = paired(runs[regime], compared)
        seeds = len({seed for by_seed in runs[regime].values() for seed in by_seed})
        power_figures = power(pairs, seeds, compared[0])
        regimes[regime] = {
            "target": target,
            "presets": table,
            "paired": pairs,
            "power": power_figures,
            "checks": instrument_checks(runs[regime], pairs, power_figures, warm) if kind == "kit" else [],
            "runs": {p: {str(s): f for s, f in runs[regime][p].items()} for p in presets},
        }
    return {"kind": kind, "warm_start": warm, "regimes": regimes, "across_regimes": across_regimes(runs, compared[0])}


def across_regimes(runs: dict, figure: str = "final_sampled_acc") -> dict:
    """Per preset, over every regime at once: the interquartile mean of `figure` over runs with its
    stratified bootstrap CI (runs resampled within each regime), and the probability of improving on
    grpo (a run of the preset against a run of grpo in the same regime) with its CI."""
    presets = sorted({preset for by_preset in runs.values() for preset in by_preset})
    out = {}
    for preset in presets:
        strata = [
            [f[figure] for f in by_preset[preset].values()] for by_preset in runs.values() if by_preset.get(preset)
        ]
        if not strata:
            continue  # every run of the preset failed
        low, high = stats.stratified_bootstrap_ci(strata, stats.pooled_iqm)
        row = {"runs": sum(map(len, strata)), "iqm": stats.pooled_iqm(*strata), "iqm_ci": [low, high]}
        pairs = [([f[figure] for f in by_preset[preset].values()], [f[figure] for f in by_preset[BASELINE].values()])
                 for by_preset in runs.values() if by_preset.get(preset) and by_preset.get(BASELINE)]  # fmt: skip
        if preset != BASELINE and pairs:
            point, low, high = stats.probability_of_improvement_ci(pairs)
            row["p_improve"], row["p_improve_ci"] = point, [low, high]
        out[preset] = row
    return {"figure": figure, "regimes": sorted(runs), "presets": out}


# recipe -> the model size of the paper's table it reproduces
RECIPE_MODEL_SIZES = {"paper_1p5b": "1.5B", "paper_7b": "7B", "paper_14b": "14B"}


def paper_tables(summary: dict) -> str:
    """Per recipe, the report's paper-style table (maspo_verl/report/table.py): one row per run of
    the sweep, the paper's own rows for the recipe's model size beside them."""
    from ..report.table import build_table, load_summary, table_markdown

    sections = []
    for recipe, block in summary["regimes"].items():
        evals = [(f"{preset}-seed{seed}", load_summary(figures["eval_dir"]))
                 for preset, seeds in block["runs"].items() for seed, figures in seeds.items()]  # fmt: skip
        if evals:
            table = build_table(evals, RECIPE_MODEL_SIZES.get(recipe))
            sections.append(f"### The paper's table: recipe `{recipe}`\n\n" + table_markdown(table))
    return "\n".join(sections)


# ----------------------------------------------------------------------------- markdown


def _cell(stat: dict, digits=3) -> str:
    """`mean ± standard error` over seeds (the mean alone for one seed); digits "+" signs it, "e"
    writes it in scientific notation (no standard error)."""
    if stat["mean"] is None:
        return "-"
    if digits == "+":
        return _signed(stat)
    if digits == "e":
        return f"{stat['mean']:.1e}"
    return (
        f"{stat['mean']:.{digits}f}" if stat["se"] is None else f"{stat['mean']:.{digits}f} ± {stat['se']:.{digits}f}"
    )


def _signed(stat: dict) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:+.3f}" + ("" if stat["se"] is None else f" ± {stat['se']:.3f}")


def _ci(ci) -> str:
    return "-" if ci is None or ci[0] is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def _run_cell(figures: dict, key: str) -> str:
    return f"{figures[key]:.3f} ± {figures[key + '_se']:.3f}"


def _preset_table(block: dict, kind: str) -> list[str]:
    columns = KINDS[kind]["columns"] + COMMON_COLUMNS
    lines = ["| preset | n | " + " | ".join(header for _, header, _ in columns) + " | failed |",
             "|---|---|" + "---|" * len(columns) + "---|"]  # fmt: skip
    for preset, row in block["presets"].items():
        failed = ", ".join(f"seed {s}" for s in row["failed_seeds"])
        cells = " | ".join(_cell(row[key], digits) for key, _, digits in columns)
        lines.append(f"| {preset} | {len(row['seeds'])} | {cells} | {failed} |")
    return lines


def _paired_table(block: dict, kind: str) -> list[str]:
    headline, *others = KINDS[kind]["compared"]
    headers = {key: header for key, header, _ in KINDS[kind]["columns"]}
    lines = [f"Paired with `{BASELINE}` on the same seeds: mean difference ± standard error of the per-seed "
             f"differences, and the 95% t confidence interval of the {headers[headline]} difference (a finding only "
             "if it excludes 0 and the difference exceeds the minimal detectable one).", "",
             f"| preset | seeds | Δ {headers[headline]} | 95% CI | " + " | ".join(f"Δ {headers[k]}" for k in others)
             + " |", "|---|---|---|---|" + "---|" * len(others)]  # fmt: skip
    for preset, row in block["paired"].items():
        cells = " | ".join(_signed(row[key]) for key in others)
        lines.append(f"| {preset} | {len(row['seeds'])} | {_signed(row[headline])} | {_ci(row[headline]['ci'])} "
                     f"| {cells} |")  # fmt: skip
    return lines


def _runs_table(block: dict, kind: str) -> list[str]:
    if kind == "kit":
        lines = ["Every run: the final model's accuracy ± its standard error over the held-out prompts.", "",
                 "| preset | seed | final acc | final greedy acc | held-out curve (step: accuracy) |",
                 "|---|---|---|---|---|"]  # fmt: skip
    else:
        lines = ["Every run: Avg@k per benchmark (the evaluator's summary is in the run's eval folder).", "",
                 "| preset | seed | Avg@k | per benchmark | validation curve (step: mean accuracy) |",
                 "|---|---|---|---|---|"]  # fmt: skip
    for preset, seeds in block["runs"].items():
        for seed, figures in seeds.items():
            curve = ", ".join(f"{step}: {point[0]:.3f}" for step, point in figures["curve"].items())
            if kind == "kit":
                lines.append(f"| {preset} | {seed} | {_run_cell(figures, 'final_sampled_acc')} "
                             f"| {_run_cell(figures, 'final_greedy_acc')} | {curve} |")  # fmt: skip
            else:
                each = ", ".join(f"{name} {value:.3f}" for name, value in figures["benchmarks"].items())
                lines.append(f"| {preset} | {seed} | {figures['avg_at_k']:.3f} | {each} | {curve} |")
    return lines


def markdown(summary: dict) -> str:
    """The summary as markdown: (kit) the warm start; per regime or recipe the instrument checks or
    the power, the preset table, the paired table and every run; then the across-regime aggregates."""
    kind, lines = summary["kind"], []
    warm = summary["warm_start"]
    if warm is not None:
        lines += [f"Warm start (step 0 of every curve): held-out accuracy {warm['sampled_acc']:.3f} ± "
                  f"{warm['sampled_acc_se']:.3f} sampled (T=1, mean@{PROBE_SAMPLES}), {warm['greedy_acc']:.3f} ± "
                  f"{warm['greedy_acc_se']:.3f} greedy, pass@{PROBE_SAMPLES} "
                  f"{warm['pass_at_k'][str(PROBE_SAMPLES)]:.3f} ({warm['prompts']} held-out prompts; ± is the "
                  "standard error over prompts).", ""]  # fmt: skip
    for regime, block in summary["regimes"].items():
        lines += [f"### {'Regime' if kind == 'kit' else 'Recipe'} `{regime}`", ""]
        if block["checks"]:
            lines += ["Instrument checks:", ""]
            lines += [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']}: {c['detail']}" for c in block["checks"]]
        elif block["power"]["mdd"] is not None:
            p = block["power"]
            lines.append(f"- minimal detectable difference in {p['figure']}: {p['mdd']:.3f} at {p['seeds']} seeds "
                         f"(sd of paired differences {p['sd']:.3f}; 5% two-sided, 80% power)")  # fmt: skip
        by_seeds = ", ".join(f"{n} seeds {mdd:.3f}" for n, mdd in block["power"]["by_seeds"].items())
        if by_seeds:
            lines.append(f"- minimal detectable difference by number of seeds: {by_seeds}")
        what = (f"Held-out accuracy on the kit's held-out prompts, sampled at T=1 (mean@{PROBE_SAMPLES}) unless "
                f"greedy; gain: over the warm start; target for steps-to-target: {block['target']}"
                if kind == "kit" else "Avg@k / Pass@k: the final checkpoint through the evaluator, mean over the "
                "recipe's benchmarks; validation: verl's during training")  # fmt: skip
        lines += ["", f"Mean ± standard error over seeds (n = seeds that finished). {what}; mismatch: the largest "
                  "|p_actor - p_rollout| of any token (mean over seeds).", "", *_preset_table(block, kind)]  # fmt: skip
        if block["paired"]:
            lines += ["", *_paired_table(block, kind)]
        lines += ["", *_runs_table(block, kind), ""]
    across = summary["across_regimes"]
    if across["presets"]:
        strata = "regime" if kind == "kit" else "recipe"
        lines += [f"### Across {strata}s ({', '.join(across['regimes'])})", "",
                  f"`{across['figure']}` over every run: the interquartile mean with its stratified bootstrap 95% CI "
                  f"(runs resampled within each {strata}), and the probability that a run of the preset beats a run of "
                  f"`{BASELINE}` on the same {strata} (ties count half), with its CI (0.5: no difference).", "",
                  "| preset | runs | IQM | 95% CI | P(improves on grpo) | 95% CI |", "|---|---|---|---|---|---|"]  # fmt: skip
        for preset, row in across["presets"].items():
            p_improve = "-" if "p_improve" not in row else f"{row['p_improve']:.2f}"
            p_ci = "-" if "p_improve" not in row else f"[{row['p_improve_ci'][0]:.2f}, {row['p_improve_ci'][1]:.2f}]"
            lines.append(f"| {preset} | {row['runs']} | {row['iqm']:.3f} | [{row['iqm_ci'][0]:.3f}, "
                         f"{row['iqm_ci'][1]:.3f}] | {p_improve} | {p_ci} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)
