"""The pure math module must not pull verl in (it is meant to be read, tested and reused alone)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

NO_VERL = (
    "assert not any(m == 'verl' or m.startswith('verl.') for m in sys.modules), "
    "sorted(m for m in sys.modules if m.split('.')[0] == 'verl')"
)


def _run(code: str) -> subprocess.CompletedProcess:
    # run from the repository root, so this checkout's maspo_verl is the one imported
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)


@pytest.mark.parametrize("module", ["maspo_verl.algos.maspo", "maspo_verl.algos"])
def test_pure_math_does_not_import_verl(module):
    res = _run(f"import {module}, sys; {NO_VERL}")
    assert res.returncode == 0, res.stderr


def test_purity_check_is_not_vacuous():
    # verl is importable here, so a stray `import verl` in the math module would be seen ...
    assert importlib.util.find_spec("verl") is not None
    # ... and the assertion fires when a verl module is loaded.
    res = _run(f"import sys, types; sys.modules['verl.utils'] = types.ModuleType('verl.utils'); {NO_VERL}")
    assert res.returncode != 0 and "verl.utils" in res.stderr
