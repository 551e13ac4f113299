"""The benchmark scripts still run (tiny sizes): they are how speed figures get made."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def test_policy_loss_benchmark_runs_and_reports_every_loss(capsys):
    import bench_policy_loss

    from maspo_verl.config import CONFIG_CLASSES

    results = bench_policy_loss.main(
        ["--device", "cpu", "--rows", "8", "--cols", "16", "--repeats", "2", "--warmup", "1", "--no-compile"]
    )
    every_loss = {"vanilla", "sapo", "gspo", "cispo", *CONFIG_CLASSES}
    assert set(results) == {f"{name}/eager" for name in every_loss}
    assert all(r["median_ms"] > 0 for r in results.values())
    out = capsys.readouterr().out
    for name in every_loss - {"vanilla"}:
        assert f"ratio {name}/vanilla (eager)" in out


def test_kit_step_times_sums_cpu_per_process_name_and_reads_py_spy_stacks():
    import kit_step_times

    first = {1: ("ray::WorkerDict", 10.0), 2: ("ray::IDLE", 1.0), 3: ("ray::IDLE", 2.0), 4: ("raylet", 5.0)}
    last = {1: ("ray::WorkerDict", 16.0), 2: ("ray::IDLE", 1.5), 3: ("ray::IDLE", 3.0), 5: ("ray::Gone", 9.0)}
    # per step over 3 steps; a process missing from either snapshot is not counted
    assert kit_step_times.cpu_per_step(first, last, 3) == {"ray::WorkerDict": 2.0, "ray::IDLE": 0.5}
    raw = (
        "Thread.run (threading.py:982);step (verl/trainer.py:10);forward (torch/nn.py:5) 6\n"
        "Thread.run (threading.py:982);step (verl/trainer.py:12);put (tq/client.py:7) 3\n"
        "Thread.run (threading.py:982);idle (selectors.py:1) 1\n"
    )
    table = dict(kit_step_times.function_table(raw))
    assert table == {"step (verl/trainer.py)": 0.9, "forward (torch/nn.py)": 0.6, "put (tq/client.py)": 0.3}


def test_kit_step_times_splits_each_process_cpu_by_the_innermost_frame_that_names_a_category():
    import kit_step_times as k

    model, plumbing, ray, fsdp = (
        next(c for c in k.CATEGORIES if c.startswith(word)) for word in ("model", "data", "Ray", "FSDP2")
    )
    raw = (
        # a tensordict call inside a forward pass is plumbing; a forward pass inside plumbing is the model
        "run (ray/_private/worker.py:1);step (verl/trainer.py:2);forward (torch/nn/modules/linear.py:3) 5\n"
        "run (ray/_private/worker.py:1);forward (torch/nn/modules/module.py:3);_setattr (tensordict/tensorclass.py:4) 2\n"
        "run (ray/_private/worker.py:1);get (transfer_queue/client.py:5);forward (torch/nn/modules/module.py:3) 1\n"
        "run (ray/_private/worker.py:1);forward (torch/nn/modules/module.py:3);all_gather (torch/distributed/c10d.py:6) 1\n"
        # verl's own Python under Ray's worker loop is verl's; the standard library defers to its caller
        "run (ray/_private/worker.py:1);balance (verl/utils/seqlen_balancing.py:7) 3\n"
        "run (ray/_private/worker.py:1);get (transfer_queue/client.py:5);__or__ (enum.py:9) 2\n"
        "run (ray/_private/worker.py:1);call (ray/actor.py:2);dumps (pickle.py:3) 4\n"
        "helper (maspo_verl/hook.py:8) 8\n"
        # blocked in native code: not work, whatever py-spy saw
        "main (default_worker.py:1);Worker.main_loop (ray/_private/worker.py:9) 6\n"
        "run (ray/_private/worker.py:1);loop (asyncio/base_events.py:2);EpollSelector.select (selectors.py:3) 6\n"
        # a thread with no Python frame: py-spy writes an empty stack
        " 2\n"
    )
    shares = k.category_shares(raw)
    assert shares == {model: 6 / 40, plumbing: 4 / 40, fsdp: 1 / 40, ray: 4 / 40, k.OTHER: 11 / 40,
                      k.WAITING: 12 / 40, k.NATIVE: 2 / 40}  # fmt: skip
    assert k.category_shares("") == {}
    cpu = {"ray::WorkerDict": 2.0, "ray::IDLE": 0.1, "raylet": 0.5}
    profiles = {
        "ray::WorkerDict": {"categories": shares},
        "ray::IDLE": {"categories": {ray: 1.0}},
        "gone": {"categories": {ray: 1.0}},
    }
    split = k.category_seconds(cpu, profiles)
    assert list(split) == ["ray::WorkerDict", "ray::IDLE"]  # largest first; raylet was not profiled
    # the CPU seconds go to the working samples only: they add up to the process's
    assert abs(split["ray::WorkerDict"][model] - 2.0 * 6 / 28) < 1e-12 and split["ray::IDLE"] == {ray: 0.1}
    assert abs(sum(split["ray::WorkerDict"].values()) - 2.0) < 1e-12
    # a process py-spy saw only blocked has nothing to split
    assert k.category_seconds({"ray::X": 1.0}, {"ray::X": {"categories": {k.WAITING: 1.0}}}) == {}
