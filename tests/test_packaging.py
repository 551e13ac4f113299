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
