"""The built wheel ships what a `pip install maspo-verl` user needs: presets, plugin, entry points."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = out.glob("maspo_verl-*.whl")
    return zipfile.ZipFile(path)


def test_presets_ship_as_the_data_only_config_package(wheel):
    shipped = set(wheel.namelist())
    for preset in (ROOT / "configs").rglob("*.yaml"):
        assert f"maspo_verl_configs/{preset.relative_to(ROOT / 'configs')}" in shipped


def test_hydra_search_path_plugin_ships(wheel):
    assert "hydra_plugins/maspo_verl/searchpath.py" in wheel.namelist()
    assert "hydra_plugins/__init__.py" not in wheel.namelist()  # a namespace package, shared with others


def test_entry_points(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[verl.plugins]\nmaspo_verl = maspo_verl.verl_plugin" in text
    for script in ["maspo-verl-train", "maspo-verl-data", "maspo-verl-eval", "maspo-verl-report"]:
        assert f"\n{script} = " in text, script


def test_each_test_file_runs_on_one_xdist_worker():
    """scripts/test.sh runs `-n 2 --dist loadgroup`; conftest.py makes each file one group, so a
    file's module fixtures (a trainer run) run once. Here two files' tests, four each, must each
    land on one worker, their ids carrying the group (xdist's load scheduling alone spreads them)."""
    tests = Path(__file__).resolve().parent
    chosen = "defaults_and_spec or hand_computed or rho0 or upper_bound_cap or micro_batch or reduce_sum"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v", "-p", "no:cacheprovider",
         str(tests / "test_bapo_math.py"), str(tests / "test_dac_math.py"), "-k", chosen],
        capture_output=True, text=True, timeout=300, cwd=tests.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    workers = {}  # file -> the workers that ran its tests
    for line in result.stdout.splitlines():
        if " PASSED " in line and line.startswith("[gw"):
            test_id = line.split(" PASSED ")[1].strip()
            assert "@" in test_id, f"no group in the test id {test_id!r}: xdist saw no group"
            workers.setdefault(test_id.split("::")[0], set()).add(line.split("]")[0])
    assert len(workers) == 2 and all(len(ran) == 1 for ran in workers.values()), workers
