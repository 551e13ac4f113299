"""From finished runs to the numbers people compare, and the checks that say whether the
instrument can compare anything at all.

Per kit run (from the probes in result.json, the sweep's warm-start probe and verl's metrics):
- `late_sampled_acc`, the kit's headline: the mean sampled accuracy of the probes in the run's last
  third (probed steps at or after LATE_FROM of the last one: 20, 25 and 30 of a 30-step run probed
  every 5). Several probes of one run average out the probe's sampling and the step-to-step swings
  of a run's accuracy, which the final probe alone carries: in the stress regime (8 seeds) the
  paired differences' sd was 0.032 against 0.090 for the A/A control, 0.049 against 0.094 for the
  compared presets
  (docs/mini-benchmark.md#the-headline-figure);
- `final_sampled_acc`, `final_greedy_acc` (+ `_se`): the final model on the held-out prompts,
  mean@8 at T=1 / greedy, standard error over prompts; `final_pass_at_8`: unbiased pass@8;
- `gain`: final sampled accuracy minus the warm start's;
- `auc`: the mean of the held-out curve from step 0 (the warm start) to the last probe (trapezoid
  rule over steps); `best_acc`; `steps_to_target`: the first probed step at or above the target.
Per recipe run (from the evaluator's summary of the final checkpoint and verl's metrics):
- `avg_at_k`, `pass_at_k`: the mean over the recipe's benchmarks (the paper's Avg column), and
  each benchmark's own; `auc`, `best_acc`: of verl's validation curve (mean over benchmarks).
Both: `entropy_end`, `response_length` (mean over the last quarter of the steps);
`weight_removed` and `neg_above_share` (mean over steps of the loss-side figures every loss logs,
`actor/pg_weight/removed` and `actor/pg_weight/neg_above_share`, maspo_verl/loss_metrics.py: the
share of policy-gradient weight the loss removes relative to -A * rho, and the share of the
gradient carried by A < 0, r > 1 tokens); `mismatch` (the largest |p_actor - p_rollout| of any
token of the run, verl's `training/rollout_probs_diff_max`); `seconds_per_step`, `startup_seconds`.

Per preset: mean, standard deviation and standard error over seeds. Paired: preset minus grpo per
seed, with the mean, its standard error, the two-sided paired t-test (p-value, 95% interval) and,
over the regime's compared presets (not the controls), Holm's correction: the adjusted p-value and
the t interval at the level Holm tests the comparison at (`stats.holm_levels`). A comparison is a
finding when its Holm-adjusted p-value is below ALPHA (equivalently, that interval and those of
every comparison with a smaller p-value exclude 0) and every instrument check of its regime passed.
The minimal detectable difference, a design figure for the number of seeds, per comparison at the
number of seeds it pairs, from the spread of the paired differences pooled over the compared
presets. On the kit, the instrument checks: grpo learns (gain >= LEARNS_BY on every seed), the
pipeline check (lr 0 reproduces the warm start's probe), the replicate (A/A: grpo again with
another sampling seed) does not differ from grpo (its 95% interval contains 0, and its
differences are not all 0), the no-trust-region control comes out worse than grpo (its 95%
interval below 0). A check whose control was not run counts as not passed. The power goal (the
largest minimal detectable difference of the comparisons at most MAX_MDD) is reported beside the
checks, met or not, and decides nothing: a comparison that excludes 0 after Holm's correction is
no less a finding for a method whose own seeds spread widely (the pooled sd includes it).
Per regime (or recipe), never pooled across them, per preset: the interquartile mean of its runs
and the probability that a run of it beats a run of grpo, each with a bootstrap interval when
every sample has at least stats.MIN_BOOTSTRAP_RUNS runs.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from ..launch import RunResult
from . import stats
from .sweep import CONTROLS, PROBE_SAMPLES, REPLICATE, run_directory

ENTROPY = "actor/entropy"
LENGTH = "response_length/mean"
STEP_SECONDS = "timing_s/step"
MISMATCH = "training/rollout_probs_diff_max"
BASELINE = "grpo"
PASS_AT = f"final_pass_at_{PROBE_SAMPLES}"
WEIGHT_REMOVED = "actor/pg_weight/removed"
NEG_ABOVE_SHARE = "actor/pg_weight/neg_above_share"
LATE_FROM = 2 / 3  # the late probes: at or after this fraction of the last probed step
LEARNS_BY = 0.10  # grpo must gain at least this much held-out accuracy on every seed
MAX_MDD = 0.06  # the power goal: the largest minimal detectable difference a sweep is designed for
ALPHA = stats.ALPHA  # a finding: Holm-adjusted p-value below this
PIPELINE, HARM = "lr0", "no_trust_region"
CHECK_FAILED_STATUS = 3  # the exit status of `python -m maspo_verl.bench` when a check did not pass
TRAINING = ["entropy_end", "response_length", "weight_removed", "neg_above_share", "mismatch", "seconds_per_step",
            "startup_seconds"]  # fmt: skip


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


def late_mean(curve: dict) -> float:
    """The mean accuracy of the curve's probes at or after LATE_FROM of its last step."""
    last = max(curve)
    late = [accuracy for step, (accuracy, _) in curve.items() if step >= LATE_FROM * last]
    return sum(late) / len(late)


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


def _step_mean(steps: dict[int, dict], key: str) -> float | None:
    values = [data[key] for data in steps.values() if key in data]
    return sum(values) / len(values) if values else None


def training_figures(steps: dict[int, dict], result: dict) -> dict:
    mismatch = [data[MISMATCH] for data in steps.values() if MISMATCH in data]
    seconds = [data[STEP_SECONDS] for data in steps.values() if STEP_SECONDS in data]
    return {
        "entropy_end": _tail_mean(steps, ENTROPY),
        "response_length": _tail_mean(steps, LENGTH),
        "weight_removed": _step_mean(steps, WEIGHT_REMOVED),
        "neg_above_share": _step_mean(steps, NEG_ABOVE_SHARE),
        "mismatch": max(mismatch) if mismatch else None,
        "seconds_per_step": statistics.median(seconds) if seconds else None,
        "startup_seconds": result.get("startup_seconds"),
    }


def kit_figures(run_dir: Path, result: dict, warm: dict, target: float) -> dict:
    """The per-run figures of a finished (`done`) kit run."""
    steps = read_steps(run_dir / "metrics.jsonl")
    finals = ("final_sampled_acc", "final_sampled_acc_se", "final_greedy_acc", "final_greedy_acc_se")
    curve = held_out_curve(result, warm)
    return {
        "late_sampled_acc": late_mean(curve),
        **{key: result[key] for key in finals},
        PASS_AT: result["final_pass_at_k"][str(PROBE_SAMPLES)],
        "gain": result["final_sampled_acc"] - warm["sampled_acc"],
        **_curve_figures(curve, target),
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
        "compared": ["late_sampled_acc", "final_sampled_acc", "final_greedy_acc", PASS_AT, "auc"],
        "columns": [
            ("late_sampled_acc", "late acc", 3),
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
                  ("weight_removed", "PG weight removed", 3), ("neg_above_share", "A<0, r>1 share", 3),
                  ("mismatch", "mismatch", "e"),
                  ("seconds_per_step", "s / step", 2), ("startup_seconds", "start-up s", 1)]  # fmt: skip
KIT_HEADERS = {key: header for key, header, _ in KINDS["kit"]["columns"]}  # the instrument checks' names


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
    error, two-sided paired t-test p-value and 95% t confidence interval."""
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
            test = stats.paired_t(differences)
            out[preset][figure] = {**spread(differences), "ci": [test.low, test.high], "p": test.p,
                                   "values": differences}  # fmt: skip
    return out


def holm_family(pairs: dict, figure: str, alpha: float = ALPHA) -> None:
    """Holm's correction over the regime's comparisons of `figure` (every compared preset with a
    p-value; not the controls): adds the adjusted p-value `p_holm`, the level Holm tests the
    comparison at and the t interval at that level (`ci_holm`) to each comparison's row."""
    family = [preset for preset, row in pairs.items() if preset not in CONTROLS and row[figure]["p"] is not None]
    p_values = [pairs[preset][figure]["p"] for preset in family]
    for preset, adjusted, level in zip(family, stats.holm(p_values), stats.holm_levels(p_values, alpha)):
        row = pairs[preset][figure]
        test = stats.paired_t(row["values"], level)
        row.update(p_holm=adjusted, holm_level=level, ci_holm=[test.low, test.high], family=len(family))


def mark_findings(pairs: dict, figure: str, checks_passed: bool | None, alpha: float = ALPHA) -> None:
    """`finding` per comparison: Holm-adjusted p below `alpha` and the instrument's checks passed
    (None where the sweep has no checks, a recipe sweep: significance alone is not a finding)."""
    for preset, row in pairs.items():
        stat = row[figure]
        if preset in CONTROLS or "p_holm" not in stat:
            continue
        significant = stat["p_holm"] < alpha
        stat["significant"] = significant
        stat["finding"] = None if checks_passed is None else bool(significant and checks_passed)


def power(pairs: dict, figure: str = "late_sampled_acc") -> dict:
    """The minimal detectable difference in `figure` of each comparison (not the controls) at the
    number of seeds it pairs, from the spread of the paired differences pooled over the compared
    presets; `mdd` and `seeds`: the comparison that resolves least. `by_seeds`: at other numbers."""
    compared = {preset: row[figure]["values"] for preset, row in pairs.items() if preset not in CONTROLS}
    sd = stats.pooled_sd(list(compared.values()))
    if sd is None:
        return {"figure": figure, "sd": None, "seeds": None, "mdd": None, "weakest": None, "comparisons": {},
                "by_seeds": {}}  # fmt: skip
    comparisons = {preset: {"seeds": len(values), "mdd": stats.minimal_detectable_difference(sd, len(values))}
                   for preset, values in compared.items()}  # fmt: skip
    weakest = max(comparisons, key=lambda preset: comparisons[preset]["mdd"])
    for preset, row in comparisons.items():
        pairs[preset][figure]["mdd"] = row["mdd"]
    return {"figure": figure, "sd": sd, "seeds": comparisons[weakest]["seeds"], "mdd": comparisons[weakest]["mdd"],
            "weakest": weakest, "comparisons": comparisons,
            "by_seeds": {str(n): stats.minimal_detectable_difference(sd, n) for n in (3, 4, 5, 6, 8, 10, 12, 16)}}  # fmt: skip


def _gains(runs: dict, preset: str) -> list:
    return [runs[preset][seed]["gain"] for seed in sorted(runs.get(preset, {}))]


def _listed(values: list) -> str:
    return ", ".join(f"{value:+.3f}" for value in values) or "none"


def check_learns(runs: dict) -> dict:
    gains = _gains(runs, BASELINE)
    return {"check": "grpo learns", "passed": bool(gains) and min(gains) >= LEARNS_BY,
            "detail": f"gain over the warm start {_listed(gains)} (seeds; needs >= {LEARNS_BY:+.2f} on every seed)"}  # fmt: skip


def check_pipeline(runs: dict, warm: dict) -> dict:
    """lr 0 with the probe's common random numbers must reproduce the warm start's probe: the same
    number of correct answers, i.e. |gain| below half of one answer's weight."""
    name = "pipeline check (lr 0 reproduces the warm start)"
    if PIPELINE not in runs:
        return {"check": name, "passed": False, "detail": "not run (--no-controls, or every run failed)"}
    gains = _gains(runs, PIPELINE)
    answers = warm["prompts"] * warm["samples"]
    tolerance = 0.5 / answers
    return {"check": name, "passed": bool(gains) and max(abs(g) for g in gains) < tolerance,
            "detail": f"gain {_listed(gains)} (needs the warm start's count of correct answers, |gain| < "
                      f"{tolerance:.5f} = half of one of {answers} answers)"}  # fmt: skip


def check_replicate(pairs: dict, power_figures: dict, figure: str) -> dict:
    """grpo against itself with another sampling seed: the 95% interval of the difference must contain 0,
    and the differences must not all be 0 (then the two runs did not sample independently)."""
    name = "replicate (A/A: grpo again, another sampling seed) does not differ from grpo"
    if REPLICATE not in pairs:
        return {"check": name, "passed": False, "detail": "not run (--no-controls, or every run failed)"}
    row = pairs[REPLICATE][figure]
    low, high = row["ci"]
    if low is None:
        return {"check": name, "passed": False, "detail": f"{row['n']} paired seed(s): needs at least 2"}
    identical = all(value == 0 for value in row["values"])
    pooled = power_figures["sd"]
    floor = (f"; its sd {row['std']:.3f} is the noise floor (the compared presets' pooled sd: "
             f"{'-' if pooled is None else f'{pooled:.3f}'})")  # fmt: skip
    return {"check": name, "passed": bool(low <= 0 <= high and not identical),
            "detail": f"Δ {KIT_HEADERS[figure]} vs grpo {_signed(row)}, 95% CI [{low:+.3f}, {high:+.3f}] (needs 0 inside, and "
                      "differences that are not all 0" + ("; every one is 0: the two runs did not sample "
                      "independently" if identical else "") + f"){floor}"}  # fmt: skip


def check_harm(pairs: dict, figure: str) -> dict:
    name = "harm control (no trust region) comes out worse"
    if HARM not in pairs:
        return {"check": name, "passed": False, "detail": "not run (--no-controls, or every run failed)"}
    row = pairs[HARM][figure]
    low, high = row["ci"]
    return {"check": name, "passed": bool(high is not None and high < 0),
            "detail": f"Δ {KIT_HEADERS[figure]} vs grpo {_signed(row)}, 95% CI {_ci(row['ci'])} (needs the CI below 0)"}  # fmt: skip


def power_goal(power_figures: dict) -> dict:
    """Whether the sweep resolves what it was designed to: a design figure for the number of seeds of
    the next sweep, not an instrument check (it decides no finding and no exit status)."""
    mdd = power_figures["mdd"]
    detail = "no paired differences yet" if mdd is None else (
        f"{mdd:.3f} for the comparison that resolves least ({power_figures['weakest']}, "
        f"{power_figures['seeds']} paired seeds; sd of paired differences {power_figures['sd']:.3f} pooled over the "
        "compared presets; 5% two-sided, 80% power)")  # fmt: skip
    return {"goal": f"minimal detectable difference <= {MAX_MDD}", "met": bool(mdd is not None and mdd <= MAX_MDD),
            "detail": detail}  # fmt: skip


def instrument_checks(runs: dict, pairs: dict, power_figures: dict, warm: dict,
                      figure: str = "late_sampled_acc") -> list[dict]:  # fmt: skip
    """Whether this regime's kit sweep is an instrument that can tell methods apart: [{check, passed, detail}]."""
    return [check_learns(runs), check_pipeline(runs, warm), check_replicate(pairs, power_figures, figure),
            check_harm(pairs, figure)]  # fmt: skip


def failed_checks(summary: dict) -> dict:
    """{regime: [names of the checks that did not pass]} for the regimes with any."""
    return {regime: [c["check"] for c in block["checks"] if not c["passed"]]
            for regime, block in summary["regimes"].items() if any(not c["passed"] for c in block["checks"])}  # fmt: skip


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
    """{"kind", "warm_start", "regimes": {regime: {...}}} over every result. A kit sweep needs the
    warm start's probe and has instrument checks; a recipe sweep has neither. Each regime is
    summarised from its own runs alone."""
    if kind == "kit":
        figures = lambda run_dir, result: kit_figures(run_dir, result, warm, target)  # noqa: E731
    else:
        figures = lambda run_dir, result: recipe_figures(run_dir, result, target)  # noqa: E731
    compared = KINDS[kind]["compared"]
    headline = compared[0]
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
        holm_family(pairs, headline)
        power_figures = power(pairs, headline)
        power_figures["goal"] = power_goal(power_figures)
        checks = instrument_checks(runs[regime], pairs, power_figures, warm, headline) if kind == "kit" else []
        mark_findings(pairs, headline, all(c["passed"] for c in checks) if checks else None)
        regimes[regime] = {
            "target": target,
            "presets": table,
            "paired": pairs,
            "power": power_figures,
            "checks": checks,
            "aggregates": aggregates(runs[regime], headline),
            "runs": {p: {str(s): f for s, f in runs[regime][p].items()} for p in presets},
        }
    return {"kind": kind, "warm_start": warm, "alpha": ALPHA, "regimes": regimes}


def aggregates(by_preset: dict, figure: str) -> dict:
    """Per preset, over one regime's runs: the interquartile mean of `figure` and the probability
    that a run of the preset beats a run of grpo, each with its bootstrap `stats.Interval` (none,
    with the reason, for fewer than stats.MIN_BOOTSTRAP_RUNS runs)."""
    baseline = [f[figure] for f in by_preset.get(BASELINE, {}).values()]
    out = {}
    for preset, seeds in sorted(by_preset.items()):
        values = [f[figure] for f in seeds.values()]
        if not values:
            continue  # every run of the preset failed
        point, interval = stats.iqm_ci(values)
        row = {"runs": len(values), "iqm": point, "iqm_ci": interval._asdict()}
        if preset != BASELINE and baseline:
            point, interval = stats.probability_of_improvement_ci([(values, baseline)])
            row["p_improve"], row["p_improve_ci"] = point, interval._asdict()
        out[preset] = row
    return {"figure": figure, "presets": out}


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


def _p(value) -> str:
    return "-" if value is None else f"{value:.3f}" if value >= 0.001 else f"{value:.0e}"


def _verdict(stat: dict, preset: str) -> str:
    if preset in CONTROLS:
        return "control"
    if "finding" not in stat:
        return "-"  # fewer than 2 paired seeds: no test
    if stat["finding"] is None:  # a recipe sweep: no instrument checks
        return "significant" if stat["significant"] else "no"
    if stat["finding"]:
        return "**finding**"
    return "no (instrument failed)" if stat["significant"] else "no"


def _paired_table(block: dict, kind: str, alpha: float) -> list[str]:
    headline, *others = KINDS[kind]["compared"]
    headers = {key: header for key, header, _ in KINDS[kind]["columns"]}
    family = next((row[headline]["family"] for row in block["paired"].values() if "family" in row[headline]), 0)
    lines = [f"Paired with `{BASELINE}` on the same seeds: the mean difference ± the standard error of the per-seed "
             f"differences; for the {headers[headline]}, the two-sided paired t-test's p-value and 95% interval, then "
             f"Holm's correction over the compared presets with at least 2 paired seeds ({family}; not the controls): "
             "the adjusted p-value and the t "
             f"interval at the level Holm tests the comparison at (1 - {alpha:g} / (m - k + 1) for the k-th smallest "
             f"p-value of m; it excludes 0 exactly when the raw p-value is below {alpha:g} / (m - k + 1)). A comparison "
             f"is a finding when its Holm-adjusted p-value is below {alpha:g} and every instrument check passed. MDD: "
             "the minimal detectable difference at the comparison's number of seeds (a design figure, not a "
             "threshold).", "",
             f"| preset | seeds | Δ {headers[headline]} | 95% CI | p | Holm p | Holm-level CI (level) | MDD | finding | "
             + " | ".join(f"Δ {headers[k]}" for k in others) + " |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(others)]  # fmt: skip
    for preset, row in block["paired"].items():
        stat = row[headline]
        holm_ci = "-" if "ci_holm" not in stat else f"{_ci(stat['ci_holm'])} ({stat['holm_level']:.4f})"
        mdd = "-" if stat.get("mdd") is None else f"{stat['mdd']:.3f}"
        cells = " | ".join(_signed(row[key]) for key in others)
        lines.append(f"| {preset} | {len(row['seeds'])} | {_signed(stat)} | {_ci(stat['ci'])} | {_p(stat['p'])} "
                     f"| {_p(stat.get('p_holm'))} | {holm_ci} | {mdd} | {_verdict(stat, preset)} | {cells} |")  # fmt: skip
    return lines


def _interval(interval: dict, digits: int) -> str:
    if interval["low"] is None:
        return f"- ({interval['note']})"
    return f"[{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def _aggregates_table(block: dict, kind: str) -> list[str]:
    aggregates = block["aggregates"]
    lines = [f"This {'regime' if kind == 'kit' else 'recipe'}'s runs alone (never pooled with another's): the interquartile mean of `{aggregates['figure']}` "
             f"with its percentile bootstrap 95% interval, and the probability that a run of the preset beats a run of "
             f"`{BASELINE}` (ties count half; 0.5: no difference) with its bootstrap interval. No interval below "
             f"{stats.MIN_BOOTSTRAP_RUNS} runs: there the percentile bootstrap covers far less than 95% (docs/mini-benchmark.md).",
             "", "| preset | runs | IQM | 95% CI | P(improves on grpo) | 95% CI |", "|---|---|---|---|---|---|"]  # fmt: skip
    for preset, row in aggregates["presets"].items():
        improve = "-" if "p_improve" not in row else f"{row['p_improve']:.2f}"
        improve_ci = "-" if "p_improve" not in row else _interval(row["p_improve_ci"], 2)
        lines.append(f"| {preset} | {row['runs']} | {row['iqm']:.3f} | {_interval(row['iqm_ci'], 3)} | {improve} | "
                     f"{improve_ci} |")  # fmt: skip
    return lines


def banner(failed: dict) -> str:
    """The warning above the comparisons (and on the console) when an instrument check did not pass."""
    where = "; ".join(f"regime `{regime}`: {', '.join(names)}" for regime, names in failed.items())
    return (f"> **INSTRUMENT CHECK FAILED** ({where}). No comparison in {'that regime' if len(failed) == 1 else 'those regimes'} "
            f"is a finding; `python -m maspo_verl.bench` exits with status {CHECK_FAILED_STATUS}.")  # fmt: skip


def _runs_table(block: dict, kind: str) -> list[str]:
    if kind == "kit":
        lines = ["Every run: the mean accuracy of its late probes (the headline), and the final model's accuracy ± "
                 "its standard error over the held-out prompts.", "",
                 "| preset | seed | late acc | final acc | final greedy acc | held-out curve (step: accuracy) |",
                 "|---|---|---|---|---|---|"]  # fmt: skip
    else:
        lines = ["Every run: Avg@k per benchmark (the evaluator's summary is in the run's eval folder).", "",
                 "| preset | seed | Avg@k | per benchmark | validation curve (step: mean accuracy) |",
                 "|---|---|---|---|---|"]  # fmt: skip
    for preset, seeds in block["runs"].items():
        for seed, figures in seeds.items():
            curve = ", ".join(f"{step}: {point[0]:.3f}" for step, point in figures["curve"].items())
            if kind == "kit":
                lines.append(f"| {preset} | {seed} | {figures['late_sampled_acc']:.3f} | {_run_cell(figures, 'final_sampled_acc')} "
                             f"| {_run_cell(figures, 'final_greedy_acc')} | {curve} |")  # fmt: skip
            else:
                each = ", ".join(f"{name} {value:.3f}" for name, value in figures["benchmarks"].items())
                lines.append(f"| {preset} | {seed} | {figures['avg_at_k']:.3f} | {each} | {curve} |")
    return lines


def markdown(summary: dict) -> str:
    """The summary as markdown: a banner if an instrument check failed; (kit) the warm start; per
    regime or recipe the instrument checks (with its banner) or the power, the preset table, the
    paired table, this regime's IQM and probability of improvement, and every run."""
    kind, lines = summary["kind"], []
    failed = failed_checks(summary)
    if failed:
        lines += [banner(failed), ""]
    warm = summary["warm_start"]
    if warm is not None:
        lines += [f"Warm start (step 0 of every curve): held-out accuracy {warm['sampled_acc']:.3f} ± "
                  f"{warm['sampled_acc_se']:.3f} sampled (T=1, mean@{PROBE_SAMPLES}), {warm['greedy_acc']:.3f} ± "
                  f"{warm['greedy_acc_se']:.3f} greedy, pass@{PROBE_SAMPLES} "
                  f"{warm['pass_at_k'][str(PROBE_SAMPLES)]:.3f} ({warm['prompts']} held-out prompts; ± is the "
                  "standard error over prompts).", ""]  # fmt: skip
    for regime, block in summary["regimes"].items():
        lines += [f"### {'Regime' if kind == 'kit' else 'Recipe'} `{regime}`", ""]
        if regime in failed:
            lines += [banner({regime: failed[regime]}), ""]
        if block["checks"]:
            lines += ["Instrument checks:", ""]
            lines += [f"- {'PASS' if c['passed'] else 'FAIL'}: {c['check']}: {c['detail']}" for c in block["checks"]]
            goal = block["power"]["goal"]
            lines.append(f"- power goal (a design figure for the number of seeds; it decides no finding): {goal['goal']}: "
                         f"{'met' if goal['met'] else 'NOT MET'}: {goal['detail']}")  # fmt: skip
        elif block["power"]["mdd"] is not None:
            p = block["power"]
            lines.append(f"- minimal detectable difference in {p['figure']}: {p['mdd']:.3f} at {p['seeds']} seeds "
                         f"({p['weakest']}; sd of paired differences {p['sd']:.3f}; 5% two-sided, 80% power)")  # fmt: skip
        by_seeds = ", ".join(f"{n} seeds {mdd:.3f}" for n, mdd in block["power"]["by_seeds"].items())
        if by_seeds:
            lines.append(f"- minimal detectable difference by number of seeds (the pooled sd): {by_seeds}")
        what = (f"Held-out accuracy on the kit's held-out prompts, sampled at T=1 (mean@{PROBE_SAMPLES}) unless "
                f"greedy; gain: over the warm start; target for steps-to-target: {block['target']}"
                if kind == "kit" else "Avg@k / Pass@k: the final checkpoint through the evaluator, mean over the "
                "recipe's benchmarks; validation: verl's during training")  # fmt: skip
        lines += ["", f"Mean ± standard error over seeds (n = seeds that finished). {what}; PG weight removed: the "
                  "share of policy-gradient weight the loss removed relative to -A·r (mean over steps; "
                  "docs/algorithms.md); A<0, r>1 share: the share of the gradient carried by tokens with A<0 and "
                  "r>1; mismatch: the largest |p_actor - p_rollout| of any token (mean over seeds).", "",
                  *_preset_table(block, kind)]  # fmt: skip
        if block["paired"]:
            lines += ["", *_paired_table(block, kind, summary["alpha"])]
        if block["aggregates"]["presets"]:
            lines += ["", *_aggregates_table(block, kind)]
        lines += ["", *_runs_table(block, kind), ""]
    return "\n".join(lines)
