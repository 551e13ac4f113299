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
