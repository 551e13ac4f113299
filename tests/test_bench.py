"""The mini benchmark (maspo_verl/bench): the chain task, sweep planning, figures and statistics
checked against independent computations here, and (e2e) a real 2-preset x 2-seed x 2-step sweep
that is killed, resumed, and carries a run that fails."""

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

from maspo_verl.bench.summary import damped_share, held_out_curve, markdown, paired, spread, summarize
from maspo_verl.bench.sweep import BenchInputError, available_presets, plan
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


def test_plan_is_seed_major_and_rejects_bad_settings():
    specs = plan(["grpo", "maspo"], [0, 1], ["standard"], 4, 2, 1)
    assert [s.name for s in specs] == ["standard/grpo/seed0", "standard/maspo/seed0", "standard/grpo/seed1",
                                       "standard/maspo/seed1"]  # fmt: skip
    overrides = specs[0].overrides(Path("/out"))
    assert "algorithm=grpo" in overrides and "data.seed=0" in overrides and "+kit=chain_cpu" in overrides
    with pytest.raises(BenchInputError, match="no_such_preset: no such preset; choose from .*maspo"):
        plan(["no_such_preset"], [0], ["standard"], 4, 2, 1)
    with pytest.raises(BenchInputError, match="--regimes gentle: choose from standard, stress"):
        plan(["grpo"], [0], ["gentle"], 4, 2, 1)
    with pytest.raises(BenchInputError, match="--steps 0"):
        plan(["grpo"], [0], ["standard"], 0, 2, 1)
    with pytest.raises(BenchInputError, match="repeated"):
        plan(["grpo"], [0, 0], ["standard"], 4, 2, 1)
    assert {"grpo", "maspo", "dapo", "bapo"} <= set(available_presets())


def test_the_cli_names_a_bad_preset_before_anything_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "maspo_verl.bench", "--presets", "grpo,mapso", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert "--presets mapso: no such preset" in result.stderr
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- figures


def _write_val_dump(path: Path, per_prompt: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (prompt, scores) in enumerate(per_prompt.items()):
        for sample, acc in enumerate(scores):
            rows.append({"input": prompt, "output": "1", "gts": "1", "score": acc / 2, "acc": acc,
                         "uid": f"u{index}_{sample}_0"})  # fmt: skip
    random.Random(0).shuffle(rows)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_held_out_curve_is_mean_at_n_with_the_standard_error_over_prompts(tmp_path):
    rng = random.Random(3)
    truth = {}
    for step in (0, 10, 20):
        per_prompt = {f"q{i}": [float(rng.random() < 0.3) for _ in range(4)] for i in range(50)}
        _write_val_dump(tmp_path / "val" / f"{step}.jsonl", per_prompt)
        means = [sum(v) / 4 for v in per_prompt.values()]
        truth[step] = (sum(means) / 50, statistics.stdev(means) / math.sqrt(50))
    curve = held_out_curve(tmp_path / "val")
    assert sorted(curve) == [0, 10, 20]
    for step, (mean, se) in truth.items():
        assert curve[step][0] == pytest.approx(mean) and curve[step][1] == pytest.approx(se)


def test_damped_share_reads_each_mechanisms_own_metrics():
    assert damped_share({"actor/maspo/gated_frac_pos": 0.1, "actor/maspo/gated_frac_neg": 0.05,
                         "actor/maspo/gate_mean": 0.9}) == pytest.approx(0.15)  # fmt: skip
    assert damped_share({"actor/dac/clip_frac_low": 0.02, "actor/dac/clip_frac_high": 0.03}) == pytest.approx(0.05)
    assert damped_share({"actor/bapo/clip_frac_low": 0.2, "actor/bapo/clip_frac_high": 0.0}) == pytest.approx(0.2)
    assert damped_share({"actor/pg_clipfrac": 0.07}) == 0.07
    assert damped_share({"critic/score/mean": 1.0}) is None


def _fake_run(out: Path, regime, preset, seed, accuracies, final, status="done"):
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
                                             "actor/pg_clipfrac": 0.01 * step}})  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for step, acc in zip((0, 4, 8), accuracies):
        per_prompt = {f"q{i}": [1.0 if i < acc * 20 else 0.0] for i in range(20)}
        _write_val_dump(run_dir / "val" / f"{step}.jsonl", per_prompt)
    result.update(final_sampled_acc=final, final_sampled_acc_se=0.01, final_greedy_acc=final + 0.1,
                  final_greedy_acc_se=0.02)  # fmt: skip
    return result


def test_summary_figures_spread_and_pairing_against_grpo(tmp_path):
    results = {
        "a": _fake_run(tmp_path, "standard", "grpo", 0, (0.2, 0.4, 0.6), 0.50),
        "b": _fake_run(tmp_path, "standard", "grpo", 1, (0.2, 0.2, 0.4), 0.40),
        "c": _fake_run(tmp_path, "standard", "maspo", 0, (0.2, 0.6, 0.6), 0.60),
        "d": _fake_run(tmp_path, "standard", "maspo", 1, (0.2, 0.4, 0.6), 0.45),
        "e": _fake_run(tmp_path, "standard", "maspo", 2, (0.2, 0.4, 0.6), 0.9),  # grpo has no seed 2
        "f": _fake_run(tmp_path, "standard", "dapo", 0, (), None, status="failed"),
    }
    summary = summarize(results, tmp_path, target=0.5)["standard"]
    grpo = summary["runs"]["grpo"]["0"]
    assert grpo["auc"] == pytest.approx(((0.2 + 0.4) / 2 * 4 + (0.4 + 0.6) / 2 * 4) / 8)
    assert grpo["best_acc"] == pytest.approx(0.6) and grpo["steps_to_target"] == 8
    assert summary["runs"]["grpo"]["1"]["steps_to_target"] is None
    assert grpo["entropy_end"] == pytest.approx((1 / 7 + 1 / 8) / 2)  # the last quarter of 8 steps
    assert grpo["damped_share"] == pytest.approx(0.045)
    assert summary["presets"]["grpo"]["final_sampled_acc"]["mean"] == pytest.approx(0.45)
    assert summary["presets"]["grpo"]["final_sampled_acc"]["std"] == pytest.approx(statistics.stdev([0.5, 0.4]))
    assert summary["presets"]["dapo"]["failed_seeds"] == [0] and summary["presets"]["dapo"]["seeds"] == []
    pair = summary["paired"]["maspo"]
    assert pair["seeds"] == [0, 1]  # only the seeds both finished
    diffs = [0.60 - 0.50, 0.45 - 0.40]
    assert pair["final_sampled_acc"]["mean"] == pytest.approx(statistics.fmean(diffs))
    assert pair["final_sampled_acc"]["se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(2))
    text = markdown({"standard": summary})
    assert "| dapo | 0 |" in text and "seed 0 |" in text  # the failed run is in the table
    assert "| maspo | 2 | +0.075 ± 0.025" in text
    assert "| grpo | 2 | 0.450 ± 0.050 |" in text  # mean ± standard error over seeds
    assert "| maspo | 1 | 0.450 ± 0.010 | 0.550 ± 0.020 | 0: 0.200, 4: 0.400, 8: 0.600 |" in text


def test_spread_of_one_value_has_no_deviation():
    assert spread([0.5]) == {"mean": 0.5, "std": None, "se": None, "n": 1}
    assert spread([None, None])["n"] == 0
    assert paired({"maspo": {}}) == {"maspo": {"seeds": [], **{k: spread([]) for k in
                                                                ("final_sampled_acc", "final_greedy_acc", "auc", "best_acc")}}}  # fmt: skip


# ----------------------------------------------------------------------------- a real sweep (e2e)


def _bench(out: Path, *extra) -> list:
    return [sys.executable, "-m", "maspo_verl.bench", "--presets", "grpo,maspo", "--seeds", "0,1", "--steps", "2",
            "--test-freq", "2", "--val-samples", "1", "--out", str(out), *extra]  # fmt: skip


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
    assert "6 runs in the sweep: 1 finished before, 5 to run" in log, log[-3000:]
    assert finished.read_text() == kept  # not run again
    assert second.returncode == 1, log[-3000:]  # a run failed, and the exit status says so
    for preset in ("grpo", "maspo"):
        for seed in (0, 1):
            result = json.loads((out / f"standard/{preset}/seed{seed}/result.json").read_text())
            assert result["status"] == "done", result
            assert 0 <= result["final_greedy_acc"] <= 1 and result["final_sampled_acc_se"] > 0
            steps = [json.loads(line)["step"] for line in (out / f"standard/{preset}/seed{seed}/metrics.jsonl").open()]
            assert set(steps) == {0, 1, 2}
    for seed in (0, 1):
        broken = json.loads((out / f"standard/broken/seed{seed}/result.json").read_text())
        assert broken["status"] == "failed" and broken["error"]
        assert f"standard/broken/seed{seed}: FAILED" in log
    summary = json.loads((out / "summary.json").read_text())["standard"]
    assert summary["presets"]["broken"]["failed_seeds"] == [0, 1]
    assert summary["presets"]["maspo"]["seeds"] == [0, 1] and summary["paired"]["maspo"]["seeds"] == [0, 1]
    assert "| broken | 0 |" in (out / "summary.md").read_text()
    assert (out / "standard.png").stat().st_size > 20_000
    assert "ETA" in log or "<" in log  # tqdm's estimate of the remaining time

    report = subprocess.run(_bench(out, "--variant", BROKEN, "--report-only"), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert "| maspo | 2 |" in report.stdout and report.returncode == 1


def test_a_failure_is_described_by_its_last_line_first_without_colour_codes():
    from maspo_verl.launch import describe_failure

    worker_error = RuntimeError(
        "\x1b[36mray::TaskRunnerV1.run()\x1b[39m\n  File x\nValueError: size mismatch for lm_head\n"
    )
    text = describe_failure(worker_error)
    assert text.splitlines()[0] == "ValueError: size mismatch for lm_head"
    assert "\x1b" not in text and "ray::TaskRunnerV1.run()" in text
    assert describe_failure(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize("regime", ["standard", "stress"])
def test_every_regime_passes_the_checks_that_run_before_ray(regime):
    """Each regime's overrides on the chain kit make a config verl accepts (batch divisibility
    included), and give the updates per rollout the docs state."""
    from hydra import compose, initialize_config_module

    from maspo_verl.config import check_algorithm_config
    from maspo_verl.preflight import check_batch_sizes

    spec = plan(["maspo"], [0], [regime], 20, 10, 2)[0]
    overrides = [o for o in spec.overrides(Path("/tmp/bench")) if not o.startswith("+kit=")]
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=["+kit=chain_cpu", *overrides])
    check_algorithm_config(config)
    check_batch_sizes(config)
    actor = config.actor_rollout_ref.actor
    updates = config.data.train_batch_size // actor.ppo_mini_batch_size
    assert updates == {"standard": 4, "stress": 8}[regime]
    assert actor.optim.lr == {"standard": 1e-5, "stress": 3e-5}[regime]
