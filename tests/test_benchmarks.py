"""The benchmark scripts still run (tiny sizes): they are how speed figures get made."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))


def test_policy_loss_benchmark_runs_and_reports_both_losses(capsys):
    import bench_policy_loss

    results = bench_policy_loss.main(["--device", "cpu", "--rows", "8", "--cols", "16", "--repeats", "2", "--warmup", "1", "--no-compile"])
    assert set(results) == {"vanilla/eager", "maspo/eager"}
    assert all(r["median_ms"] > 0 for r in results.values())
    assert "ratio maspo/vanilla (eager)" in capsys.readouterr().out
