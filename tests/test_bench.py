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

from maspo_verl.bench import stats
from maspo_verl.bench.summary import (
    damped_share,
    held_out_curve,
    instrument_checks,
    markdown,
    paired,
    power,
    spread,
    summarize,
)
from maspo_verl.bench.sweep import CONTROLS, MAIN_PRESETS, REGIMES, BenchInputError, available_presets, plan
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
    specs = plan(["grpo", "maspo"], [0, 1, 2, 3], ["standard"], 4, 2)
    assert [s.name for s in specs] == [
        "standard/grpo/seed0", "standard/maspo/seed0", "standard/lr0/seed0", "standard/no_trust_region/seed0",
        "standard/grpo/seed1", "standard/maspo/seed1", "standard/no_trust_region/seed1",  # lr0: one seed
        "standard/grpo/seed2", "standard/maspo/seed2", "standard/no_trust_region/seed2",  # the harm control: three
        "standard/grpo/seed3", "standard/maspo/seed3",
    ]  # fmt: skip
    overrides = specs[0].overrides()
    assert "algorithm=grpo" in overrides and "data.seed=0" in overrides and "+kit=tiny_cpu" in overrides
    assert (
        "trainer.test_freq=-1" in overrides and "trainer.save_freq=2" in overrides
    )  # the probe, not verl's validation
    control = specs[3].overrides()
    assert "algorithm=grpo" in control and control[-4:] == list(CONTROLS["no_trust_region"][1])
    assert [s.name for s in plan(["grpo"], [0], ["standard"], 4, 2, controls=False)] == ["standard/grpo/seed0"]
    assert plan(["grpo"], [0], ["standard"], 4, 2, task="chain")[0].overrides()[0] == "+kit=chain_cpu"
    assert plan(["grpo"], [0], ["standard"], 25, 10)[0].probe_steps() == [10, 20, 25]
    with pytest.raises(BenchInputError, match="no_such_preset: no such preset; choose from .*maspo"):
        plan(["no_such_preset"], [0], ["standard"], 4, 2)
    with pytest.raises(BenchInputError, match="--regimes gentle: choose from standard, stress"):
        plan(["grpo"], [0], ["gentle"], 4, 2)
    with pytest.raises(BenchInputError, match="--steps 0"):
        plan(["grpo"], [0], ["standard"], 0, 2)
    with pytest.raises(BenchInputError, match="repeated"):
        plan(["grpo"], [0, 0], ["standard"], 4, 2)
    with pytest.raises(BenchInputError, match="--task mul: choose from add, chain"):
        plan(["grpo"], [0], ["standard"], 4, 2, task="mul")
    with pytest.raises(BenchInputError, match="lr0: the name of a variant must not be a preset or control"):
        plan(["grpo"], [0], ["standard"], 4, 2, variants=["lr0=grpo actor_rollout_ref.actor.optim.lr=1e-6"])
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


def test_damped_share_reads_each_mechanisms_own_metrics():
    assert damped_share({"actor/maspo/gated_frac_pos": 0.1, "actor/maspo/gated_frac_neg": 0.05,
                         "actor/maspo/gate_mean": 0.9}) == pytest.approx(0.15)  # fmt: skip
    assert damped_share({"actor/dac/clip_frac_low": 0.02, "actor/dac/clip_frac_high": 0.03}) == pytest.approx(0.05)
    assert damped_share({"actor/bapo/clip_frac_low": 0.2, "actor/bapo/clip_frac_high": 0.0}) == pytest.approx(0.2)
    assert damped_share({"actor/pg_clipfrac": 0.07}) == 0.07
    assert damped_share({"critic/score/mean": 1.0}) is None


def _fake_run(out: Path, regime, preset, seed, accuracies, status="done"):
    """A finished run: verl's metrics for 8 steps and probes at steps 4 and 8."""
    run_dir = out / regime / preset / f"seed{seed}"
    run_dir.mkdir(parents=True)
    result = {"run": {"regime": regime, "preset": preset, "seed": seed}, "status": status}
    if status != "done":
        result["error"] = "RuntimeError: boom"
        return result
    lines = []
    for step in range(1, 9):
        lines.append({"step": step, "data": {"critic/score/mean": 0.1 * step, "actor/entropy": 1.0 / step,
                                             "response_length/mean": 10.0 + step, "timing_s/step": 1.0 + seed,
                                             "actor/pg_clipfrac": 0.01 * step,
                                             "training/rollout_probs_diff_max": 1e-6 * step}})  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    probes = {str(step): _probe(acc) for step, acc in zip((4, 8), accuracies)}
    final = probes["8"]
    result.update(probes=probes, final_sampled_acc=final["sampled_acc"], final_sampled_acc_se=0.01,
                  final_greedy_acc=final["greedy_acc"], final_greedy_acc_se=0.02, final_pass_at_k=final["pass_at_k"])  # fmt: skip
    return result


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
    assert grpo["damped_share"] == pytest.approx(0.045) and grpo["mismatch"] == pytest.approx(8e-6)
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
    # across regimes (one here): the IQM over maspo's three runs; P(maspo beats grpo) by counting
    across = summary["across_regimes"]["presets"]
    assert across["maspo"]["iqm"] == pytest.approx(stats.iqm([0.7, 0.45, 0.9]))
    wins = sum(1.0 if m > g else 0.5 if m == g else 0.0 for m in (0.7, 0.45, 0.9) for g in (0.6, 0.4))
    assert across["maspo"]["p_improve"] == pytest.approx(wins / 6)
    text = markdown(summary)
    assert "| dapo | 0 |" in text and "seed 0 |" in text  # the failed run is in the table
    assert "| maspo | 2 | +0.075 ± 0.025 |" in text
    assert "| grpo | 2 | 0.500 ± 0.100 |" in text  # mean ± standard error over seeds
    assert "| maspo | 1 | 0.450 ± 0.010 | 0.550 ± 0.020 | 0: 0.200, 4: 0.400, 8: 0.450 |" in text
    assert "Warm start (step 0 of every curve): held-out accuracy 0.200 ± 0.010" in text


def test_power_pools_the_paired_spread_over_presets_but_not_the_controls():
    pairs = {
        "maspo": {"final_sampled_acc": {"values": [0.01, 0.03, 0.02]}},
        "dapo": {"final_sampled_acc": {"values": [-0.02, 0.0]}},
        "no_trust_region": {"final_sampled_acc": {"values": [-0.3, 0.1]}},  # a control: left out
    }
    figures = power(pairs, seeds=3)
    expected_sd = math.sqrt(((0.01 - 0.02) ** 2 + 0 + (0.03 - 0.02) ** 2 + 2 * 0.01**2) / (2 + 1))
    assert figures["sd"] == pytest.approx(expected_sd)
    assert figures["mdd"] == pytest.approx(stats.minimal_detectable_difference(expected_sd, 3))
    assert figures["by_seeds"]["5"] < figures["mdd"]


def _checks(grpo_gains, lr0_gains, harm_differences, sd):
    runs = {"grpo": {s: {"gain": g} for s, g in enumerate(grpo_gains)},
            "lr0": {s: {"gain": g} for s, g in enumerate(lr0_gains)}}  # fmt: skip
    low, high = stats.paired_t_ci(harm_differences)[1:]
    pairs = {"no_trust_region": {"final_sampled_acc": {**spread(harm_differences), "ci": [low, high]}}}
    power_figures = {"mdd": stats.minimal_detectable_difference(sd, 3), "sd": sd, "seeds": 3}
    return {c["check"].split(" (")[0].split(":")[0]: c["passed"]
            for c in instrument_checks(runs, pairs, power_figures, WARM)}  # fmt: skip


def test_the_instrument_checks_pass_and_fail_on_their_thresholds():
    good = _checks([0.25, 0.3, 0.28], [0.0, 0.0, 0.01], [-0.2, -0.25, -0.18], sd=0.01)
    assert good == {"grpo learns": True, "negative control": True, "harm control": True, "power": True}
    bad = _checks([0.25, 0.05, 0.28], [0.0, 0.05, 0.0], [-0.2, 0.1, -0.1], sd=0.05)
    assert bad == {"grpo learns": False, "negative control": False, "harm control": False, "power": False}


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
                             "grpo,maspo", "--seeds", "0", "--plan", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paper_1p5b/maspo/seed0" in result.stdout and "GPU-hours" in result.stdout
    assert "total:" in result.stdout and not (tmp_path / "out").exists()
    kit = subprocess.run([sys.executable, "-m", "maspo_verl.bench", "--presets", "all", "--seeds", "0", "--steps", "2",
                          "--no-controls", "--plan", "--out", str(tmp_path / "kit")],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert kit.returncode == 0, kit.stderr[-3000:]
    for preset in available_presets():  # verl's own losses (dppo_tv, geo_mean, gpg ...) among them
        assert f"standard/{preset}/seed0\n" in kit.stdout, preset
    assert "loss       gpg (advantages gpg)" in kit.stdout and "loss       dppo_tv (advantages grpo)" in kit.stdout
    assert f"{len(available_presets())} runs on the tiny kit (CPU)" in kit.stdout and not (tmp_path / "kit").exists()


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
    assert "Across recipes (paper_7b)" in text


# ----------------------------------------------------------------------------- a real sweep (e2e)


def _bench(out: Path, *extra) -> list:
    return [sys.executable, "-m", "maspo_verl.bench", "--presets", "grpo,maspo", "--seeds", "0", "--steps", "2",
            "--probe-every", "1", "--no-controls", "--out", str(out), *extra]  # fmt: skip


BROKEN = "broken=grpo +actor_rollout_ref.model.override_config.hidden_size=96"  # the worker cannot load the weights


@pytest.mark.e2e
def test_a_sweep_killed_mid_run_resumes_without_redoing_finished_runs_and_reports_a_failing_run(tmp_path):
    out = tmp_path / "sweep"
    with open(tmp_path / "first.log", "w") as first_log:
        first = subprocess.Popen(_bench(out, "--variant", BROKEN), stdout=first_log, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
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

    second = subprocess.run(_bench(out, "--variant", BROKEN), capture_output=True, text=True, timeout=1200)
    log = second.stdout + second.stderr
    assert "3 runs in the sweep: 1 finished before, 2 to run" in log, log[-3000:]
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

    from maspo_verl.config import check_algorithm_config
    from maspo_verl.preflight import check_batch_sizes

    spec = plan(["maspo"], [0], [regime], 20, 10, controls=False)[0]
    overrides = [o for o in spec.overrides() if not o.startswith("+kit=")]
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=["+kit=tiny_cpu", *overrides])
    check_algorithm_config(config)
    check_batch_sizes(config)
    actor = config.actor_rollout_ref.actor
    updates = config.data.train_batch_size // actor.ppo_mini_batch_size * actor.ppo_epochs
    assert updates == {"standard": 4, "stress": 16}[regime]
    assert actor.optim.lr == 5e-5
