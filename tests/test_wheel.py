"""The package as users get it: sdist and wheel built with the standard front end, metadata
checked, the wheel (not an editable install, no test extra) installed into a fresh virtual
environment, and verl used from there: registration on `import verl`, stock `main_ppo`
composing `+algorithm=maspo`, and the quickstart training one step of the kit, plot included.

Every command runs outside the checkout, so nothing can import this repository's sources.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def run(command, cwd, timeout=900, env=None):
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={key: value for key, value in (env or os.environ).items() if key != "PYTHONPATH"},
    )  # fmt: skip
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with the built wheel, a folder outside the checkout, the dist folder)."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    run([sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", dist, ROOT], cwd=work)
    run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())], cwd=work)
    venv = work / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=work)
    python = venv / "bin" / "python"
    # the torch this suite runs on (CPU CI pins it; an unpinned torch would pull CUDA packages)
    run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}"], cwd=work)
    (wheel,) = dist.glob("*.whl")
    # uv where scripts/setup_env.sh put it (a minute faster on CI's machine), else pip
    uv = Path(sys.executable).with_name("uv")
    install = (
        [uv, "pip", "install", "-q", "--python", python] if uv.exists() else [python, "-m", "pip", "install", "-q"]
    )
    run([*install, wheel], cwd=work)
    return python, work, dist


def test_sdist_and_wheel_carry_the_license_and_the_readme(installed):
    """(What the wheel ships besides: tests/test_packaging.py.)"""
    import tarfile
    import zipfile

    _, _, dist = installed
    (wheel,) = dist.glob("*.whl")
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in zipfile.ZipFile(wheel).namelist())
    (sdist,) = dist.glob("*.tar.gz")
    members = tarfile.open(sdist).getnames()
    assert any(name.endswith("/LICENSE") for name in members) and any(name.endswith("/README.md") for name in members)


def test_import_verl_registers_everything_from_the_wheel(installed):
    python, work, _ = installed
    code = (
        "import verl, maspo_verl, json\n"
        "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
        "from verl.workers.rollout.replica import RolloutReplicaRegistry\n"
        "print(json.dumps({'file': maspo_verl.__file__, 'losses': sorted(POLICY_LOSS_REGISTRY),"
        " 'hf': 'hf' in RolloutReplicaRegistry._registry}))\n"
    )
    found = json.loads(run([python, "-c", code], cwd=work).stdout.strip().splitlines()[-1])
    assert "site-packages" in found["file"] and str(ROOT) not in found["file"]
    assert {"maspo", "dac", "bapo", "vanilla"} <= set(found["losses"]) and found["hf"]
    # installed as a user installs it: none of the test extra's own packages (verl brings pytest)
    assert subprocess.run([python, "-c", "import hypothesis"], cwd=work, capture_output=True).returncode != 0


def test_stock_main_ppo_composes_our_preset_from_the_wheel(installed):
    python, work, _ = installed
    job = run([python, "-m", "verl.trainer.main_ppo", "+algorithm=dac", "--cfg", "job"], cwd=work).stdout
    assert "loss_mode: dac" in job and "maspo_verl.config.DACPolicyLossConfig" in job


def test_the_quickstart_trains_the_kit_from_the_wheel_without_the_test_extra(installed):
    python, work, _ = installed
    out = work / "quickstart"
    run([python, "-m", "maspo_verl.quickstart", "--steps", "1", "--out", out], cwd=work)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and 0 <= summary["held_out_accuracy_end"] <= 1
    assert (out / "quickstart.png").stat().st_size > 10_000
