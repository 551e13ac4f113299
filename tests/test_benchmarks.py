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
