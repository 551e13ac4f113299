"""The mini benchmark (maspo_verl/bench): the chain task, sweep planning, the probe, the figures,
the instrument checks and the tables, checked against independent computations here, and (e2e) a
real 2-preset x 2-seed x 2-step sweep that is killed, resumed, and carries a run that fails.
The statistics themselves are tested in tests/test_bench_stats.py."""

import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scipy.stats import t as student

from maspo_verl.bench import stats
from maspo_verl.bench.__main__ import exit_status
from maspo_verl.bench.summary import (
    LEARNS_BY,
    MAX_MDD,
    check_harm,
    check_learns,
    check_pipeline,
    check_replicate,
    failed_checks,
    held_out_curve,
    late_mean,
    mark_findings,
    markdown,
    paired,
    power,
    power_goal,
    spread,
    summarize,
)
from maspo_verl.bench.sweep import (
    CONTROLS,
    MAIN_PRESETS,
    REGIMES,
    BenchInputError,
    available_presets,
    finished_runs,
    plan_kit,
)
from maspo_verl.kit.chain import ChainProblem, random_problem, split_problems
from maspo_verl.kit.reward import compute_chain_score

# ----------------------------------------------------------------------------- the chain task


def test_chain_problems_are_worked_step_by_step_and_stay_non_negative():
    rng = random.Random(5)
    for _ in range(500):
        problem = random_problem(rng)
        value = eval(problem.question[:-1])  # the question is plain integer arithmetic
        totals = [int(t) for t in problem.target.split(",")]
        assert totals[-1] == value and len(totals) == len(problem.operands) - 1
        assert min(totals) >= 0
        running = problem.operands[0]
        for operator, operand, total in zip(problem.operators, problem.operands[1:], totals):
            running = running + operand if operator == "+" else running - operand
            assert running == total


def test_every_wrong_target_is_scored_wrong_and_the_target_right():
    rng = random.Random(1)
    for _ in range(100):
        problem = random_problem(rng)
        assert compute_chain_score(solution_str=problem.target, ground_truth=problem.answer) == {
            "score": 1.0,
            "acc": 1.0,
        }
        for wrong in problem.wrong_targets():
            assert compute_chain_score(solution_str=wrong, ground_truth=problem.answer)["acc"] == 0.0


@pytest.mark.parametrize(
    "response, score, acc",
    [
        ("42,34,43,47,41", 1.0, 1.0),
        (" 42,34,43,47,41 ", 1.0, 1.0),
        ("42,34,44,48,41", 0.4, 1.0),  # right answer, slip in the middle: accuracy counts the answer
        ("42,34,43,47,40", 0.8, 0.0),
        ("41,34,43,47,41", 0.0, 1.0),
        ("42,34,41", 0.0, 1.0),  # too few totals: no partial credit
        ("42,34,43,47,41,", 0.0, 0.0),
        ("~42,34,43,47,41", 0.0, 0.0),
        ("", 0.0, 0.0),
    ],
)
def test_chain_score(response, score, acc):
    assert compute_chain_score(solution_str=response, ground_truth="42,34,43,47,41") == pytest.approx(
        {"score": score, "acc": acc}
    )


def test_chain_split_is_deterministic_distinct_and_disjoint():
    train, held_out = split_problems(0, 256)
    again, _ = split_problems(0, 256)
    assert train[:50] == again[:50]
    questions = [p.question for p in train + held_out]
    assert len(set(questions)) == len(questions) and len(held_out) == 256
    assert split_problems(1, 256)[1] != held_out


def test_chain_problem_question_layout():
    problem = ChainProblem((37, 5, 8, 9, 4, 6), ("+", "-", "+", "+", "-"))
    assert problem.question == "37+5-8+9+4-6="
    assert problem.target == "42,34,43,47,41"


# ----------------------------------------------------------------------------- planning


def test_plan_is_seed_major_has_the_controls_and_rejects_bad_settings():
    specs = plan_kit(["grpo", "maspo"], [0, 1, 2, 3], ["standard"], 4, 2)
    assert [s.name for s in specs] == [
        "standard/grpo/seed0", "standard/maspo/seed0", "standard/lr0/seed0", "standard/replicate/seed0",
        "standard/no_trust_region/seed0",
        "standard/grpo/seed1", "standard/maspo/seed1", "standard/replicate/seed1",  # lr0: one seed
        "standard/no_trust_region/seed1",
        "standard/grpo/seed2", "standard/maspo/seed2", "standard/replicate/seed2",  # the others: every seed
        "standard/no_trust_region/seed2",
        "standard/grpo/seed3", "standard/maspo/seed3", "standard/replicate/seed3", "standard/no_trust_region/seed3",
    ]  # fmt: skip
    overrides = specs[0].overrides()
    assert "algorithm=grpo" in overrides and "data.seed=0" in overrides and "+kit=tiny_cpu" in overrides
    assert "actor_rollout_ref.rollout.seed=0" in overrides
    assert (
        "trainer.test_freq=-1" in overrides and "trainer.save_freq=2" in overrides
    )  # the probe, not verl's validation
    control, grpo = specs[4].overrides(), specs[0].overrides()
    assert "algorithm=grpo" in control and control[-3:] == list(CONTROLS["no_trust_region"][1])
    # the harm control differs from grpo in the trust region alone
    assert [o for o in control if o not in grpo] == [o for o in control if "clip_ratio" in o]
    # the replicate: grpo, the same data order, another sampling seed (no other run's)
    replicate, grpo = specs[7].overrides(), specs[5].overrides()
    assert replicate != grpo and "data.seed=1" in replicate and "actor_rollout_ref.rollout.seed=10001" in replicate
    assert [o for o in replicate if "rollout.seed" not in o] == [o for o in grpo if "rollout.seed" not in o]
    assert [s.name for s in plan_kit(["grpo"], [0], ["standard"], 4, 2, controls=False)] == ["standard/grpo/seed0"]
    assert plan_kit(["grpo"], [0], ["standard"], 4, 2, task="chain")[0].overrides()[0] == "+kit=chain_cpu"
    assert plan_kit(["grpo"], [0], ["standard"], 25, 10)[0].probe_steps() == [10, 20, 25]
    with pytest.raises(BenchInputError, match="no_such_preset: no such preset; choose from .*maspo"):
        plan_kit(["no_such_preset"], [0], ["standard"], 4, 2)
    with pytest.raises(BenchInputError, match="--regimes gentle: choose from standard, stress"):
        plan_kit(["grpo"], [0], ["gentle"], 4, 2)
    with pytest.raises(BenchInputError, match="--steps 0"):
        plan_kit(["grpo"], [0], ["standard"], 0, 2)
    with pytest.raises(BenchInputError, match="repeated"):
        plan_kit(["grpo"], [0, 0], ["standard"], 4, 2)
    with pytest.raises(BenchInputError, match="--task mul: choose from add, chain"):
        plan_kit(["grpo"], [0], ["standard"], 4, 2, task="mul")
    with pytest.raises(BenchInputError, match="lr0: the name of a variant must not be a preset or control"):
        plan_kit(["grpo"], [0], ["standard"], 4, 2, variants=["lr0=grpo actor_rollout_ref.actor.optim.lr=1e-6"])
    assert set(MAIN_PRESETS) < set(available_presets())


def test_the_cli_names_a_bad_preset_before_anything_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "maspo_verl.bench", "--presets", "grpo,mapso", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "--presets mapso: no such preset" in result.stderr
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- the probe


def test_the_probe_measures_the_warm_start_and_its_pass_at_k():
    """The kit's warm start through the probe: pass@1 is the sampled accuracy (Avg@8), pass@k
    grows with k, and the probe draws the same samples every time (common random numbers)."""
    from maspo_verl.bench.sweep import probe_model
    from maspo_verl.kit import build_kit

    kit = build_kit(task="add", log=lambda message: None)
    probe = probe_model(kit.model_dir, "add")
    assert probe["prompts"] == kit.info["val_size"] and probe["samples"] == 8
    assert probe["pass_at_k"]["1"] == pytest.approx(probe["sampled_acc"])
    ladder = [probe["pass_at_k"][k] for k in ("1", "2", "4", "8")]
    assert ladder == sorted(ladder) and ladder[-1] > ladder[0]
    # the warm start samples at T=1 far below its greedy accuracy: the headroom RL closes
    assert probe["greedy_acc"] > probe["sampled_acc"] + 0.2
    assert 0 < probe["sampled_acc_se"] < 0.05
    assert probe_model(kit.model_dir, "add") == probe


# ----------------------------------------------------------------------------- figures


WARM = {"sampled_acc": 0.2, "sampled_acc_se": 0.01, "greedy_acc": 0.5, "greedy_acc_se": 0.02, "prompts": 20,
        "samples": 8, "pass_at_k": {"1": 0.2, "2": 0.3, "4": 0.4, "8": 0.5}}  # fmt: skip


def _probe(acc):
    return {"sampled_acc": acc, "sampled_acc_se": 0.01, "greedy_acc": acc + 0.1, "greedy_acc_se": 0.02,
            "pass_at_k": {"1": acc, "2": acc + 0.05, "4": acc + 0.1, "8": acc + 0.2}}  # fmt: skip


def test_held_out_curve_starts_at_the_warm_start():
    result = {"probes": {"20": _probe(0.6), "10": _probe(0.4)}}
    assert held_out_curve(result, WARM) == {0: (0.2, 0.01), 10: (0.4, 0.01), 20: (0.6, 0.01)}


def _fake_run(out: Path, regime, preset, seed, accuracies, status="done", write=False, probe_steps=(4, 8)):
    """A finished run: verl's metrics for 8 steps and probes at `probe_steps` (with `write`, its
    result.json too, as the sweep leaves it)."""
    run_dir = out / regime / preset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    result = {"run": {"regime": regime, "preset": preset, "seed": seed}, "status": status}
    if status != "done":
        result["error"] = "RuntimeError: boom"
    else:
        lines = []
        for step in range(1, 9):
            lines.append({"step": step, "data": {"critic/score/mean": 0.1 * step, "actor/entropy": 1.0 / step,
                                                 "response_length/mean": 10.0 + step, "timing_s/step": 1.0 + seed,
                                                 "actor/pg_weight/removed": 0.01 * step,
                                                 "actor/pg_weight/neg_above_share": 0.02 * step,
                                                 "training/rollout_probs_diff_max": 1e-6 * step}})  # fmt: skip
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        probes = {str(step): _probe(acc) for step, acc in zip(probe_steps, accuracies)}
        final = probes[str(probe_steps[-1])]
        result.update(probes=probes, final_sampled_acc=final["sampled_acc"], final_sampled_acc_se=0.01,
                      final_greedy_acc=final["greedy_acc"], final_greedy_acc_se=0.02, final_pass_at_k=final["pass_at_k"])  # fmt: skip
    if write:
        (run_dir / "result.json").write_text(json.dumps(result))
    return result


def test_finished_runs_lists_a_regimes_done_runs_and_nothing_else(tmp_path):
    """What the tools of benchmarks/ read from a sweep's folder: done runs of the regime asked for;
    a failed run, a run still going (no result.json) and another regime's runs are left out."""
    _fake_run(tmp_path, "stress", "grpo", 0, (0.4, 0.6), write=True)
    _fake_run(tmp_path, "stress", "grpo", 11, (0.4, 0.6), write=True)
    _fake_run(tmp_path, "stress", "maspo", 0, (0.4, 0.6), write=True)
    _fake_run(tmp_path, "stress", "maspo", 1, (0.4, 0.6), status="failed", write=True)
    _fake_run(tmp_path, "stress", "sapo", 0, (0.4, 0.6))  # still running: no result.json
    _fake_run(tmp_path, "standard", "grpo", 0, (0.4, 0.6), write=True)
    assert finished_runs(tmp_path, "stress") == {
        "grpo": {0: tmp_path / "stress/grpo/seed0", 11: tmp_path / "stress/grpo/seed11"},
        "maspo": {0: tmp_path / "stress/maspo/seed0"},
    }
    assert finished_runs(tmp_path, "missing") == {}


def test_summary_figures_spread_and_pairing_against_grpo(tmp_path):
    results = {
        "a": _fake_run(tmp_path, "standard", "grpo", 0, (0.4, 0.6)),
        "b": _fake_run(tmp_path, "standard", "grpo", 1, (0.2, 0.4)),
        "c": _fake_run(tmp_path, "standard", "maspo", 0, (0.6, 0.7)),
        "d": _fake_run(tmp_path, "standard", "maspo", 1, (0.4, 0.45)),
        "e": _fake_run(tmp_path, "standard", "maspo", 2, (0.4, 0.9)),  # grpo has no seed 2
        "f": _fake_run(tmp_path, "standard", "dapo", 0, (), status="failed"),
    }
    summary = summarize(results, tmp_path, warm=WARM, target=0.5)
    block = summary["regimes"]["standard"]
    grpo = block["runs"]["grpo"]["0"]
    assert grpo["curve"] == {"0": [0.2, 0.01], "4": [0.4, 0.01], "8": [0.6, 0.01]}
    assert grpo["auc"] == pytest.approx(((0.2 + 0.4) / 2 * 4 + (0.4 + 0.6) / 2 * 4) / 8)
    assert grpo["gain"] == pytest.approx(0.4) and grpo["final_pass_at_8"] == pytest.approx(0.8)
    assert grpo["best_acc"] == pytest.approx(0.6) and grpo["steps_to_target"] == 8
    assert block["runs"]["grpo"]["1"]["steps_to_target"] is None
    assert grpo["entropy_end"] == pytest.approx((1 / 7 + 1 / 8) / 2)  # the last quarter of 8 steps
    # the loss-side figures: the mean over every step
    assert grpo["weight_removed"] == pytest.approx(0.045) and grpo["neg_above_share"] == pytest.approx(0.09)
    assert grpo["mismatch"] == pytest.approx(8e-6)
    assert block["presets"]["grpo"]["final_sampled_acc"]["mean"] == pytest.approx(0.5)
    assert block["presets"]["grpo"]["final_sampled_acc"]["std"] == pytest.approx(statistics.stdev([0.6, 0.4]))
    assert block["presets"]["dapo"]["failed_seeds"] == [0] and block["presets"]["dapo"]["seeds"] == []
    pair = block["paired"]["maspo"]
    assert pair["seeds"] == [0, 1]  # only the seeds both finished
    diffs = [0.7 - 0.6, 0.45 - 0.4]
    assert pair["final_sampled_acc"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert pair["final_sampled_acc"]["se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(2))
    half = 12.706205 * statistics.stdev(diffs) / math.sqrt(2)  # t_{0.975, 1}
    assert pair["final_sampled_acc"]["ci"] == pytest.approx([0.075 - half, 0.075 + half], rel=1e-5)
    # t = mean / se on 1 degree of freedom: p = 1 - 2 atan(|t|) / pi (the Cauchy distribution)
    t = 0.075 / (statistics.stdev(diffs) / math.sqrt(2))
    assert pair["final_sampled_acc"]["p"] == pytest.approx(1 - 2 * math.atan(t) / math.pi, rel=1e-6)
    # one comparison in the family: Holm changes nothing, and the instrument failed: no finding
    # the headline (late accuracy; here the last probe alone, at step 8 of 8) carries Holm and the finding
    assert pair["late_sampled_acc"]["p"] == pytest.approx(pair["final_sampled_acc"]["p"])
    assert pair["late_sampled_acc"]["p_holm"] == pytest.approx(pair["late_sampled_acc"]["p"])
    assert pair["late_sampled_acc"]["finding"] is False
    assert "p_holm" not in pair["final_sampled_acc"]
    # this regime's runs: the IQM over maspo's three runs (too few for a bootstrap interval)
    aggregates = block["aggregates"]["presets"]
    assert aggregates["maspo"]["iqm"] == pytest.approx(stats.iqm([0.7, 0.45, 0.9]))
    assert aggregates["maspo"]["iqm_ci"]["low"] is None and "too few" in aggregates["maspo"]["iqm_ci"]["note"]
    wins = sum(1.0 if m > g else 0.5 if m == g else 0.0 for m in (0.7, 0.45, 0.9) for g in (0.6, 0.4))
    assert aggregates["maspo"]["p_improve"] == pytest.approx(wins / 6)
    text = markdown(summary)
    assert "| dapo | 0 |" in text and "seed 0 |" in text  # the failed run is in the table
    assert "| maspo | 2 | +0.075 ± 0.025 |" in text
    assert "| grpo | 2 | 0.500 ± 0.100 |" in text  # mean ± standard error over seeds
    assert "| maspo | 1 | 0.450 | 0.450 ± 0.010 | 0.550 ± 0.020 | 0: 0.200, 4: 0.400, 8: 0.450 |" in text
    assert "| maspo | 3 | 0.683 | - (3 runs: too few for a bootstrap interval (needs 6)) |" in text
    assert "Warm start (step 0 of every curve): held-out accuracy 0.200 ± 0.010" in text
    assert "0.00 [0.00, 0.00]" not in text


def test_the_headline_is_the_mean_of_the_probes_in_the_runs_last_third(tmp_path):
    """A 30-step run probed every 5 steps: its late accuracy is the mean of the probes at steps 20,
    25 and 30; probed every 10, of 20 and 30; and it, not the final probe, is what the paired
    comparison tests and the instrument checks read."""
    accuracies = (0.30, 0.50, 0.45, 0.70, 0.60, 0.62)
    every5 = {"probes": {str(step): _probe(acc) for step, acc in zip(range(5, 31, 5), accuracies)}}
    assert late_mean(held_out_curve(every5, WARM)) == pytest.approx((0.70 + 0.60 + 0.62) / 3)
    every10 = {"probes": {"10": _probe(0.5), "20": _probe(0.7), "30": _probe(0.6)}}
    assert late_mean(held_out_curve(every10, WARM)) == pytest.approx((0.7 + 0.6) / 2)
    assert late_mean(held_out_curve({"probes": {"30": _probe(0.6)}}, WARM)) == pytest.approx(0.6)

    steps = (2, 4, 6, 8)  # the last third of 8 steps: 6 and 8
    grpo = {s: (0.5, 0.6, 0.7, 0.6 + 0.1 * s) for s in range(3)}
    maspo = {s: (0.5, 0.6, 0.5 + 0.02 * s, 0.6 + 0.1 * s) for s in range(3)}  # the same final probe, a lower step 6
    results = {f"{preset}{seed}": _fake_run(tmp_path, "stress", preset, seed, accs, probe_steps=steps)
               for preset, runs in (("grpo", grpo), ("maspo", maspo)) for seed, accs in runs.items()}  # fmt: skip
    block = summarize(results, tmp_path, warm=WARM, target=0.5)["regimes"]["stress"]
    assert block["paired"]["maspo"]["final_sampled_acc"]["values"] == pytest.approx([0, 0, 0])
    assert block["paired"]["maspo"]["late_sampled_acc"]["values"] == pytest.approx([-0.1, -0.09, -0.08])
    assert block["power"]["figure"] == "late_sampled_acc" and "p_holm" in block["paired"]["maspo"]["late_sampled_acc"]
    assert block["presets"]["grpo"]["late_sampled_acc"]["mean"] == pytest.approx(statistics.fmean(
        (0.7 + 0.6 + 0.1 * s) / 2 for s in range(3)))  # fmt: skip


def _regime(tmp_path, accuracies: dict, regime="standard"):
    """summarize() over fake runs: {preset: [final accuracy per seed]}."""
    results = {f"{preset}{seed}": _fake_run(tmp_path, regime, preset, seed, (acc - 0.1, acc))
               for preset, values in accuracies.items() for seed, acc in enumerate(values)}  # fmt: skip
    return summarize(results, tmp_path, warm=WARM, target=0.5)


def test_holm_decides_the_findings_and_its_intervals_match_the_decisions(tmp_path):
    """Three presets against grpo on 8 seeds, and every control passing its check: the adjusted
    p-values by hand (Holm), the interval at each one's Holm level from the t quantile, findings
    only where the adjusted p is below 0.05."""
    rng = random.Random(0)
    grpo = [0.7 + rng.gauss(0, 0.02) for _ in range(8)]
    shifts = {"maspo": -0.06, "sapo": -0.03, "dapo": 0.004}
    accuracies = {"grpo": grpo, **{p: [g + shift + rng.gauss(0, 0.02) for g in grpo] for p, shift in shifts.items()},
                  "lr0": [WARM["sampled_acc"]], "replicate": [g + rng.gauss(0, 0.02) for g in grpo],
                  "no_trust_region": [g - 0.2 for g in grpo[:3]]}  # fmt: skip
    accuracies["no_trust_region"][1] -= 0.01  # some spread
    summary = _regime(tmp_path, accuracies)
    block = summary["regimes"]["standard"]
    checks = {c["check"].split(" (")[0].split(":")[0]: c["passed"] for c in block["checks"]}
    assert all(checks.values()), block["checks"]
    rows = {p: block["paired"][p]["late_sampled_acc"] for p in shifts}
    raw = {p: row["p"] for p, row in rows.items()}
    order = sorted(raw, key=raw.get)
    expected, running = {}, 0.0
    for rank, preset in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * raw[preset]))
        expected[preset] = running
    for rank, preset in enumerate(order):
        row = rows[preset]
        assert row["p_holm"] == pytest.approx(expected[preset]) and row["family"] == 3
        assert row["holm_level"] == pytest.approx(1 - 0.05 / (3 - rank))
        n, mean, sd = 8, statistics.fmean(row["values"]), statistics.stdev(row["values"])
        half = student.ppf(1 - 0.05 / (3 - rank) / 2, n - 1) * sd / math.sqrt(n)
        assert row["ci_holm"] == pytest.approx([mean - half, mean + half], rel=1e-9)
        assert row["finding"] == (expected[preset] < 0.05)
        excludes_zero = row["ci_holm"][1] < 0 or row["ci_holm"][0] > 0
        assert excludes_zero == (raw[preset] < 0.05 / (3 - rank))
    assert rows["maspo"]["finding"] and not rows["dapo"]["finding"]
    assert "p_holm" not in block["paired"]["replicate"]["late_sampled_acc"]
    text = markdown(summary)
    assert "INSTRUMENT CHECK FAILED" not in text and "| maspo | 8 |" in text and "**finding**" in text
    assert exit_status(summary) == 0


def test_the_minimal_detectable_difference_is_per_comparison_at_the_seeds_it_pairs(tmp_path):
    """maspo pairs 3 seeds with grpo, dapo 2 (its third run failed): the power check reads the
    weakest comparison, not every seed any preset finished; the controls are not pooled."""
    pairs = {
        "maspo": {"final_sampled_acc": {"values": [0.01, 0.03, 0.02]}},
        "dapo": {"final_sampled_acc": {"values": [-0.02, 0.0]}},
        "no_trust_region": {"final_sampled_acc": {"values": [-0.3, 0.1]}},  # a control: left out
    }
    figures = power(pairs, "final_sampled_acc")
    expected_sd = math.sqrt(((0.01 - 0.02) ** 2 + 0 + (0.03 - 0.02) ** 2 + 2 * 0.01**2) / (2 + 1))
    assert figures["sd"] == pytest.approx(expected_sd)
    assert figures["comparisons"]["maspo"]["mdd"] == pytest.approx(stats.minimal_detectable_difference(expected_sd, 3))
    assert figures["comparisons"]["dapo"]["mdd"] == pytest.approx(stats.minimal_detectable_difference(expected_sd, 2))
    assert (
        figures["weakest"] == "dapo"
        and figures["seeds"] == 2
        and figures["mdd"] == figures["comparisons"]["dapo"]["mdd"]
    )
    assert pairs["maspo"]["final_sampled_acc"]["mdd"] < pairs["dapo"]["final_sampled_acc"]["mdd"]
    assert "mdd" not in pairs["no_trust_region"]["final_sampled_acc"]
    assert figures["by_seeds"]["5"] < figures["comparisons"]["maspo"]["mdd"]


# t_{0.975, 2}, from printed tables: a 3-value sample m + (-a, 0, a) has sd a and 95% half-width T2 a / sqrt(3)
T2 = 4.302653


def _three_with_low(low: float, a: float = 0.01) -> list:
    """Three paired differences whose 95% t interval starts at `low` (to the table's precision)."""
    mean = low + T2 * a / math.sqrt(3)
    return [mean - a, mean, mean + a]


def _three_with_high(high: float, a: float = 0.01) -> list:
    mean = high - T2 * a / math.sqrt(3)
    return [mean - a, mean, mean + a]


def _pair_row(values):
    test = stats.paired_t(values)
    return {**spread(values), "ci": [test.low, test.high], "values": values, "p": test.p}


EPS = 1e-5  # beyond the 6 digits of the printed t quantile


@pytest.mark.parametrize("gain, passes", [(LEARNS_BY + 1e-9, True), (LEARNS_BY, True), (LEARNS_BY - 1e-9, False)])
def test_grpo_learns_at_its_threshold(gain, passes):
    assert check_learns({"grpo": {0: {"gain": 0.3}, 1: {"gain": gain}}})["passed"] is passes


def test_the_pipeline_check_needs_the_warm_starts_answers_exactly():
    half_answer = 0.5 / (WARM["prompts"] * WARM["samples"])  # 1/320
    for gain, passes in [(0.0, True), (half_answer - 1e-9, True), (-(half_answer - 1e-9), True),
                         (half_answer + 1e-9, False), (-(half_answer + 1e-9), False), (2 * half_answer, False)]:  # fmt: skip
        assert check_pipeline({"lr0": {0: {"gain": gain}}}, WARM)["passed"] is passes, gain
    assert check_pipeline({}, WARM) == {"check": "pipeline check (lr 0 reproduces the warm start)", "passed": False,
                                        "detail": "not run (--no-controls, or every run failed)"}  # fmt: skip


@pytest.mark.parametrize("low, passes", [(-EPS, True), (EPS, False)])
def test_the_replicate_interval_must_contain_zero_at_its_lower_edge(low, passes):
    values = _three_with_low(low)
    row = _pair_row(values)
    assert row["ci"][0] == pytest.approx(low, abs=EPS / 10)
    assert (
        check_replicate({"replicate": {"final_sampled_acc": row}}, {"sd": 0.02}, "final_sampled_acc")["passed"]
        is passes
    )


@pytest.mark.parametrize("high, passes", [(EPS, True), (-EPS, False)])
def test_the_replicate_interval_must_contain_zero_at_its_upper_edge(high, passes):
    row = _pair_row(_three_with_high(high))
    assert (
        check_replicate({"replicate": {"final_sampled_acc": row}}, {"sd": 0.02}, "final_sampled_acc")["passed"]
        is passes
    )


def test_a_replicate_that_reproduces_grpo_exactly_fails():
    """Differences of exactly 0 on every seed: the replicate did not sample independently, so it
    measures no noise (its interval [0, 0] contains 0, and still the check fails)."""
    check = check_replicate({"replicate": {"final_sampled_acc": _pair_row([0.0, 0.0, 0.0])}}, {"sd": 0.02},
                            "final_sampled_acc")  # fmt: skip
    assert not check["passed"] and "not all 0" in check["detail"]
    one_seed = check_replicate(
        {"replicate": {"final_sampled_acc": _pair_row([0.01])}}, {"sd": None}, "final_sampled_acc"
    )
    assert not one_seed["passed"] and "needs at least 2" in one_seed["detail"]


@pytest.mark.parametrize("high, passes", [(-EPS, True), (EPS, False)])
def test_the_harm_control_must_come_out_below_zero_at_its_edge(high, passes):
    row = _pair_row(_three_with_high(high))
    assert row["ci"][1] == pytest.approx(high, abs=EPS / 10)
    assert check_harm({"no_trust_region": {"final_sampled_acc": row}}, "final_sampled_acc")["passed"] is passes


@pytest.mark.parametrize(
    "mdd, passes", [(MAX_MDD - 1e-9, True), (MAX_MDD, True), (MAX_MDD + 1e-9, False), (None, False)]
)
def test_the_power_goal_at_its_threshold(mdd, passes):
    figures = {"mdd": mdd, "sd": 0.02, "seeds": 8, "weakest": "maspo"}
    assert power_goal(figures)["met"] is passes


def test_a_comparison_that_spreads_widely_misses_the_power_goal_and_decides_nothing_else(tmp_path):
    """Controls that pass, a preset 0.1 below grpo on every seed with little spread, and one whose
    seeds swing by +-0.25 (a method that collapses on some seeds): the pooled sd misses the power
    goal, which the summary says, while the clear difference stays a finding and the exit status 0.
    The MDD chooses the next sweep's seeds; it is not a threshold on results."""
    rng = random.Random(1)
    grpo = [0.7 + rng.gauss(0, 0.02) for _ in range(8)]
    accuracies = {"grpo": grpo, "maspo": [g - 0.1 + rng.gauss(0, 0.01) for g in grpo],
                  "cispo": [g + (0.25 if seed % 2 else -0.25) for seed, g in enumerate(grpo)],
                  "lr0": [WARM["sampled_acc"]], "replicate": [g + rng.gauss(0, 0.02) for g in grpo],
                  "no_trust_region": [g - 0.2 + rng.gauss(0, 0.02) for g in grpo]}  # fmt: skip
    summary = _regime(tmp_path, accuracies, regime="stress")
    block = summary["regimes"]["stress"]
    assert all(c["passed"] for c in block["checks"]), block["checks"]
    goal = block["power"]["goal"]
    assert not goal["met"] and block["power"]["mdd"] > MAX_MDD
    assert block["paired"]["maspo"]["late_sampled_acc"]["finding"] is True
    assert block["paired"]["cispo"]["late_sampled_acc"]["finding"] is False  # +-0.25 around 0: no difference
    text = markdown(summary)
    assert "INSTRUMENT CHECK FAILED" not in text and "power goal" in text and "NOT MET" in text
    assert exit_status(summary) == 0


@pytest.mark.parametrize("p_holm, checks, finding", [(0.05 - 1e-9, True, True), (0.05, True, False),
                                                     (0.05 + 1e-9, True, False), (0.001, False, False),
                                                     (0.001, None, None)])  # fmt: skip
def test_a_finding_needs_a_holm_p_below_alpha_and_the_checks_passed(p_holm, checks, finding):
    pairs = {"maspo": {"final_sampled_acc": {"p_holm": p_holm}}, "replicate": {"final_sampled_acc": {"p_holm": 0.0}}}
    mark_findings(pairs, "final_sampled_acc", checks)
    assert pairs["maspo"]["final_sampled_acc"]["finding"] is finding
    assert "finding" not in pairs["replicate"]["final_sampled_acc"]  # a control is never a finding


def test_a_failed_check_gives_a_banner_above_the_comparisons_and_exit_status_3(tmp_path):
    summary = _regime(tmp_path, {"grpo": [0.7, 0.72, 0.69], "maspo": [0.5, 0.52, 0.48]}, regime="stress")
    failed = failed_checks(summary)
    assert "stress" in failed and "pipeline check (lr 0 reproduces the warm start)" in failed["stress"]
    text = markdown(summary)
    assert text.startswith("> **INSTRUMENT CHECK FAILED** (regime `stress`: ")
    section = text.index("### Regime `stress`")
    assert section < text.index("> **INSTRUMENT CHECK FAILED**", section) < text.index("Paired with")
    assert "no (instrument failed)" in text  # maspo's -0.2 is significant, and still not a finding
    assert exit_status(summary) == 3
    summary["regimes"]["stress"]["presets"]["maspo"]["failed_seeds"] = [3]
    assert exit_status(summary) == 1  # a failed run first: the sweep is not complete


def test_report_only_exits_3_and_ends_with_the_banner_when_a_check_fails(tmp_path):
    (tmp_path / "warm_start_add.json").write_text(json.dumps(WARM))
    for preset, values in {"grpo": [0.7, 0.72], "maspo": [0.5, 0.52]}.items():
        for seed, acc in enumerate(values):
            _fake_run(tmp_path, "standard", preset, seed, (acc - 0.1, acc), write=True)
    result = subprocess.run([sys.executable, "-m", "maspo_verl.bench", "--presets", "grpo,maspo", "--seeds", "0,1",
                             "--regimes", "standard", "--no-controls", "--report-only", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("> **INSTRUMENT CHECK FAILED** (regime `standard`")
    assert "FAIL: pipeline check (lr 0 reproduces the warm start): not run" in result.stdout
    assert (tmp_path / "summary.md").read_text().startswith("> **INSTRUMENT CHECK FAILED**")


def test_spread_of_one_value_has_no_deviation():
    assert spread([0.5]) == {"mean": 0.5, "std": None, "se": None, "n": 1}
    assert spread([None, None])["n"] == 0
    assert paired({"maspo": {}})["maspo"]["final_sampled_acc"]["n"] == 0


# ----------------------------------------------------------------------------- recipe sweeps


def test_plan_recipes_gives_every_run_the_recipe_the_seed_and_the_users_overrides():
    from maspo_verl.bench.sweep import plan_recipes

    specs = plan_recipes(["paper_1p5b"], ["grpo", "maspo"], [0, 1], steps=50, overrides=["trainer.nnodes=2"],
                         variants=["maspo_a5=maspo actor_rollout_ref.actor.policy_loss.alpha=0.5"])  # fmt: skip
    assert [s.name for s in specs] == [f"paper_1p5b/{p}/seed{k}" for k in (0, 1) for p in ("grpo", "maspo", "maspo_a5")]
    overrides = specs[-1].overrides()
    assert overrides[:4] == ["recipe=paper_1p5b", "algorithm=maspo", "data.seed=1", "actor_rollout_ref.rollout.seed=1"]
    assert "trainer.total_training_steps=50" in overrides and "trainer.resume_mode=auto" in overrides
    # the user's overrides, then the variant's own
    assert overrides[-2:] == ["trainer.nnodes=2", "actor_rollout_ref.actor.policy_loss.alpha=0.5"]
    assert not specs[0].restart  # verl resumes an interrupted recipe run from its checkpoint
    assert "trainer.total_training_steps" not in " ".join(plan_recipes(["paper_7b"], ["grpo"], [0])[0].overrides())
    with pytest.raises(BenchInputError, match="--recipe paper_3b: choose from paper_14b, paper_1p5b, paper_7b"):
        plan_recipes(["paper_3b"], ["grpo"], [0])
    with pytest.raises(BenchInputError, match="--eval-k 0"):
        plan_recipes(["paper_7b"], ["grpo"], [0], eval_k=0)


def test_every_preset_has_a_colour_of_its_own():
    from maspo_verl.bench.plots import preset_colors

    colors = preset_colors(available_presets())
    assert len(set(colors.values())) == len(colors) == len(available_presets())


def test_the_plan_estimates_gpu_hours_from_the_recipes_sizes(tmp_path, monkeypatch):
    """Training tokens = steps x prompts x n x fill x (max prompt + max response); validation and the
    final evaluation add problems x samples x the same; GPU-hours = tokens / throughput / 3600."""
    from maspo_verl.bench.plan import estimate, run_config
    from maspo_verl.bench.sweep import plan_recipes

    monkeypatch.setenv("MASPO_DATA_DIR", str(tmp_path))  # no data there: held-out work is not counted
    spec = plan_recipes(["paper_7b"], ["grpo"], [0], steps=100, overrides=["trainer.nnodes=4"])[0]
    config = run_config(spec, tmp_path)
    data, n = config.data, config.actor_rollout_ref.rollout.n
    cost = estimate(config, None, throughput=2000.0, fill=0.25)
    train = 100 * data.train_batch_size * n * 0.25 * (data.max_prompt_length + data.max_response_length)
    assert cost["train_tokens"] == pytest.approx(train) and cost["held_out_tokens"] is None
    assert cost["gpu_hours"] == pytest.approx(train / 2000 / 3600)
    assert cost["wall_hours"] == pytest.approx(cost["gpu_hours"] / (4 * config.trainer.n_gpus_per_node))


def test_the_cli_plans_without_running_on_a_recipe_and_on_the_kit(tmp_path):
    env = dict(os.environ, MASPO_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "maspo_verl.bench", "--recipe", "paper_1p5b", "--presets",
                             "grpo,maspo", "--seeds", "0", "--plan", "--out", str(tmp_path / "out"),
                             "--gpu-memory-gb", "40"], capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paper_1p5b/maspo/seed0" in result.stdout and "GPU-hours" in result.stdout
    # each run's memory estimate on the card named: the 1.5B recipe without offload, 91% of 40 GiB
    assert result.stdout.count("memory     per GPU of 40.0 GiB (named)") == 2
    assert "memory     rollout and weight sync: 36.5 GiB (91%)" in result.stdout
    assert "memory     WARNING the rollout and weight sync needs about 36.5 GiB" in result.stdout
    assert "total:" in result.stdout and not (tmp_path / "out").exists()
    kit = subprocess.run([sys.executable, "-m", "maspo_verl.bench", "--presets", "all", "--seeds", "0", "--steps", "2",
                          "--no-controls", "--plan", "--out", str(tmp_path / "kit")],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert kit.returncode == 0, kit.stderr[-3000:]
    for preset in available_presets():  # verl's own losses (dppo_tv, geo_mean, gpg ...) among them; the default regime
        assert f"stress/{preset}/seed0\n" in kit.stdout, preset
    assert "loss       gpg (advantages gpg)" in kit.stdout and "loss       dppo_tv (advantages grpo)" in kit.stdout
    assert f"{len(available_presets())} runs on the tiny kit (CPU)" in kit.stdout and not (tmp_path / "kit").exists()


def test_the_offpolicy_study_script_plans_every_method_variant_and_control_on_both_regimes(tmp_path):
    """examples/bench/offpolicy_study.sh with PLAN=1: the issue's methods, MASPO's ablations and its
    two mechanism variants (their overrides on the maspo preset) x seeds x 2 regimes, the controls
    (planned on 2 seeds, as planning each run composes its config; the default is 8)."""
    script = Path(__file__).resolve().parents[1] / "examples/bench/offpolicy_study.sh"
    assert "SEEDS=${SEEDS:-0,1,2,3,4,5,6,7}" in script.read_text()
    env = dict(os.environ, PLAN="1", OUT=str(tmp_path / "study"), SEEDS="0,1")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    methods = ["grpo", "dapo", "maspo", "maspo_gate_only", "maspo_no_mass", "maspo_no_risk", "maspo_two_sided", "sapo",
               "cispo", "dppo_tv", "maspo_dual_clip", "maspo_sigma02", "replicate", "no_trust_region"]  # fmt: skip
    for regime in ("stress", "standard"):
        for seed in range(2):
            for preset in methods + (["lr0"] if seed == 0 else []):
                assert f"\n{regime}/{preset}/seed{seed}\n" in result.stdout, (regime, preset, seed)
    assert f"{2 * (2 * len(methods) + 1)} runs on the tiny kit (CPU)" in result.stdout
    blocks = dict(block.split("\n", 1) for block in result.stdout.split("\n\n") if block.startswith("stress/maspo_"))
    assert "algorithm=maspo " in blocks["stress/maspo_dual_clip/seed1"]
    assert "actor_rollout_ref.actor.policy_loss.dual_clip_c=3" in blocks["stress/maspo_dual_clip/seed1"]
    assert "actor_rollout_ref.actor.policy_loss.sigma_base=0.2" in blocks["stress/maspo_sigma02/seed1"]
    assert "dual_clip_c" not in blocks["stress/maspo_sigma02/seed1"]
    assert not (tmp_path / "study").exists()


def test_the_dry_run_checks_every_run_and_names_the_ones_that_fail(tmp_path, monkeypatch, capsys):
    from maspo_verl.bench.plan import dry_run
    from maspo_verl.bench.sweep import plan_recipes

    monkeypatch.setenv("MASPO_DATA_DIR", str(tmp_path))  # the recipe's data is not there
    specs = plan_recipes(["paper_1p5b"], ["grpo", "maspo"], [0])
    assert dry_run(specs, tmp_path) == 2
    out = capsys.readouterr().out
    assert "paper_1p5b/grpo/seed0: FAILED: FileNotFoundError" in out and "dapo_math_17k.parquet" in out
    assert "dry run: 0 of 2 runs pass; failed: paper_1p5b/grpo/seed0, paper_1p5b/maspo/seed0" in out


def _fake_recipe_run(out: Path, preset, seed, avg):
    run_dir = out / "paper_7b" / preset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    lines = [{"step": step, "data": {"critic/score/mean": 0.1 * step, "val-core/aime24/acc/mean@32": 0.2 + 0.01 * step,
                                     "val-core/math500/acc/mean@32": 0.6 + 0.01 * step}} for step in (0, 5, 10)]  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"run": {"regime": "paper_7b", "preset": preset, "seed": seed}, "status": "done", "eval_k": 4,
            "avg_at_k": avg, "avg_at_k_ci": [avg - 0.1, avg + 0.1], "pass_at_k": {"1": avg, "2": avg + 0.1, "4": avg + 0.2},
            "benchmarks": {"aime24": {"avg_at_k": avg - 0.2, "pass_at_k": {}}, "math500": {"avg_at_k": avg + 0.2,
                                                                                          "pass_at_k": {}}},
            "eval_dir": str(run_dir / "eval")}  # fmt: skip


def test_a_recipe_sweep_is_summarised_from_the_evaluations_and_verls_validation(tmp_path):
    results = {f"{p}{s}": _fake_recipe_run(tmp_path, p, s, avg) for (p, s, avg) in
               [("grpo", 0, 0.5), ("grpo", 1, 0.4), ("maspo", 0, 0.55), ("maspo", 1, 0.48)]}  # fmt: skip
    summary = summarize(results, tmp_path, kind="recipe")
    block = summary["regimes"]["paper_7b"]
    run = block["runs"]["grpo"]["0"]
    assert run["pass_at_k"] == pytest.approx(0.7) and run["benchmarks"] == {"aime24": 0.3, "math500": 0.7}
    assert run["curve"] == {"0": [0.4, None], "5": [0.45, None], "10": [0.5, None]}  # mean over benchmarks
    assert run["best_acc"] == pytest.approx(0.5) and run["auc"] == pytest.approx(0.45)
    assert block["paired"]["maspo"]["avg_at_k"]["mean"] == pytest.approx(((0.55 - 0.5) + (0.48 - 0.4)) / 2)
    assert block["checks"] == [] and block["power"]["figure"] == "avg_at_k"
    text = markdown(summary)
    assert "### Recipe `paper_7b`" in text and "| grpo | 0 | 0.500 | aime24 0.300, math500 0.700 |" in text
    assert "This recipe's runs alone (never pooled with another's)" in text and "| maspo | 2 | 0.515 |" in text
    # no instrument checks on a recipe sweep: a significant difference is only that, never a finding
    assert block["paired"]["maspo"]["avg_at_k"]["finding"] is None
    assert block["paired"]["maspo"]["avg_at_k"]["significant"] is False and "| no |" in text


# ----------------------------------------------------------------------------- a real sweep (e2e)


def _bench(out: Path, *extra) -> list:
    return [sys.executable, "-m", "maspo_verl.bench", "--presets", "grpo,maspo", "--seeds", "0", "--steps", "2",
            "--probe-every", "1", "--no-controls", "--regimes", "standard", "--out", str(out), *extra]  # fmt: skip


BROKEN = "broken=grpo +actor_rollout_ref.model.override_config.hidden_size=96"  # the worker cannot load the weights


@pytest.mark.e2e
def test_a_sweep_killed_mid_run_resumes_without_redoing_finished_runs_and_reports_a_failing_run(tmp_path):
    out = tmp_path / "sweep"
    with open(tmp_path / "first.log", "w") as first_log:
        first = subprocess.Popen(_bench(out, "--variant", BROKEN, "--workers", "1"), stdout=first_log,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        finished, started = out / "standard/grpo/seed0/result.json", out / "standard/maspo/seed0"
        deadline = time.time() + 600
        while not (finished.exists() and started.exists()):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "the first run did not finish in 10 minutes"
            time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)  # the whole sweep, Ray included, mid-run
        first.wait()
    assert not (started / "result.json").exists()
    kept = finished.read_text()

    # resumed in two Ray sessions side by side (the default on 2 cores): one run each
    second = subprocess.run(_bench(out, "--variant", BROKEN, "--workers", "2"), capture_output=True, text=True,
                            timeout=1200)  # fmt: skip
    log = second.stdout + second.stderr
    assert "3 runs in the sweep: 1 finished before, 2 to run" in log, log[-3000:]
    assert "2 runs in 2 Ray sessions side by side" in log, log[-3000:]
    assert (out / "shard0.log").exists() and (out / "shard1.log").exists()
    assert finished.read_text() == kept  # not run again
    assert second.returncode == 1, log[-3000:]  # a run failed, and the exit status says so
    for preset in ("grpo", "maspo"):
        run_dir = out / f"standard/{preset}/seed0"
        result = json.loads((run_dir / "result.json").read_text())
        assert result["status"] == "done", result
        assert sorted(result["probes"]) == ["1", "2"]  # every probed step
        assert 0 <= result["final_greedy_acc"] <= 1 and result["final_sampled_acc_se"] > 0
        assert result["final_pass_at_k"]["1"] == pytest.approx(result["final_sampled_acc"])
        steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").open()]
        assert set(steps) == {1, 2}  # no validation pass at step 0: the warm start is probed once
        assert not (run_dir / "checkpoints/global_step_1").exists()  # probed, then removed
        assert (run_dir / "checkpoints/global_step_2/actor/huggingface").is_dir()  # the final model stays
    broken = json.loads((out / "standard/broken/seed0/result.json").read_text())
    assert broken["status"] == "failed" and broken["error"]
    assert "standard/broken/seed0: FAILED" in log
    assert json.loads((out / "warm_start_add.json").read_text())["samples"] == 8
    summary = json.loads((out / "summary.json").read_text())
    block = summary["regimes"]["standard"]
    assert block["presets"]["broken"]["failed_seeds"] == [0]
    assert block["presets"]["maspo"]["seeds"] == [0] and block["paired"]["maspo"]["seeds"] == [0]
    assert block["presets"]["grpo"]["mismatch"]["mean"] < 1e-4  # the rollout samples the policy being trained
    assert "| broken | 0 |" in (out / "summary.md").read_text()
    assert "Instrument checks:" in (out / "summary.md").read_text()
    assert (out / "standard.png").stat().st_size > 20_000
    assert "ETA" in log or "<" in log  # tqdm's estimate of the remaining time

    report = subprocess.run(_bench(out, "--variant", BROKEN, "--report-only"), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert "| maspo | 1 |" in report.stdout and report.returncode == 1


def test_a_failure_is_described_by_its_last_line_first_without_colour_codes():
    from maspo_verl.launch import describe_failure

    worker_error = RuntimeError(
        "\x1b[36mray::TaskRunnerV1.run()\x1b[39m\n  File x\nValueError: size mismatch for lm_head\n"
    )
    text = describe_failure(worker_error)
    assert text.splitlines()[0] == "ValueError: size mismatch for lm_head"
    assert "\x1b" not in text and "ray::TaskRunnerV1.run()" in text
    assert describe_failure(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize("regime", sorted(REGIMES))
def test_every_regime_passes_the_checks_that_run_before_ray(regime):
    """Each regime's overrides on the kit make a config verl accepts (batch divisibility
    included), and give the updates per rollout the docs state."""
    from hydra import compose, initialize_config_module

    from maspo_verl.preflight import check_algorithm_config, check_batch_sizes

    spec = plan_kit(["maspo"], [0], [regime], 20, 10, controls=False)[0]
    overrides = [o for o in spec.overrides() if not o.startswith("+kit=")]
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=["+kit=tiny_cpu", *overrides])
    check_algorithm_config(config)
    check_batch_sizes(config)
    actor = config.actor_rollout_ref.actor
    updates = config.data.train_batch_size // actor.ppo_mini_batch_size * actor.ppo_epochs
    assert updates == {"standard": 4, "stress": 16}[regime]
    assert actor.optim.lr == 5e-5


def test_sweeps_run_two_sessions_side_by_side_on_the_kit_and_one_for_recipes(monkeypatch):
    from maspo_verl.bench.sweep import default_workers, plan_recipes

    kit_specs = plan_kit(["grpo"], [0, 1], ["standard"], steps=2, probe_every=1)
    recipe_specs = plan_recipes(["paper_1p5b"], ["grpo"], [0, 1])
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert default_workers(kit_specs) == 2 and default_workers(recipe_specs) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert default_workers(kit_specs) == 1


def test_a_shard_rebuilds_the_runs_it_was_given(tmp_path, monkeypatch):
    """The runs a shard subprocess reads back from its file are the runs the sweep planned."""
    import maspo_verl.bench.sweep as sweep

    specs = plan_kit(["grpo"], [0], ["standard"], steps=2, probe_every=1, variants=["wide=grpo a.b=1 c=2"])
    received = []
    monkeypatch.setattr(sweep, "run_sweep", lambda runs, out, **kwargs: received.extend(runs))
    shard_file = tmp_path / "shard0.json"
    shard_file.write_text(
        json.dumps({"out": str(tmp_path), "runs": [{"kind": s.kind, **sweep.asdict(s)} for s in specs]})
    )
    sweep._run_shard(shard_file)
    assert received == specs and all(hash(spec) for spec in received)


@pytest.mark.parametrize("setting, value", [("sigma_base", 0.2), ("dual_clip_c", 3.0)])
def test_the_mechanism_variants_of_maspo_pass_the_checks_that_run_before_ray(setting, value):
    """The study's two variants, preset-free: a narrower gate and the dual clip, as --variant gives them."""
    from hydra import compose, initialize_config_module
    from verl.utils.config import omega_conf_to_dataclass

    from maspo_verl.preflight import check_algorithm_config

    variant = f"maspo_{setting}=maspo actor_rollout_ref.actor.policy_loss.{setting}={value}"
    spec = plan_kit(["grpo"], [0], ["stress"], 20, 10, variants=[variant], controls=False)[-1]
    assert spec.preset == f"maspo_{setting}" and spec.algorithm == "maspo"
    overrides = [o for o in spec.overrides() if not o.startswith("+kit=")]
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=["+kit=tiny_cpu", *overrides])
    check_algorithm_config(config)
    policy_loss = omega_conf_to_dataclass(config.actor_rollout_ref.actor.policy_loss)
    assert getattr(policy_loss, setting) == value
    config.actor_rollout_ref.actor.policy_loss[setting] = 1.0 if setting == "dual_clip_c" else 0.0
    from hydra.errors import InstantiationException  # verl builds the config with Hydra's instantiate

    with pytest.raises(
        (ValueError, InstantiationException), match=rf"policy_loss\.{setting}=.* is not allowed: it must be"
    ):
        omega_conf_to_dataclass(config.actor_rollout_ref.actor.policy_loss)
