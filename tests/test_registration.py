"""maspo is registered in any fresh process that imports verl, by each documented route."""

import os
import subprocess
import sys

CHECK = (
    "import verl\n"
    "from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY\n"
    "print('maspo' in POLICY_LOSS_REGISTRY)\n"
)


def run_python(code, **env):
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    full_env = {**inherited, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


def registered(code=CHECK, **env):
    result = run_python(code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] == "True"


def test_plain_import_verl_registers_through_the_entry_point():
    assert registered()


def test_without_the_entry_point_nothing_is_registered():
    """The control for the tests below: with verl's plugin discovery off, maspo is absent."""
    assert not registered(VERL_USE_EXTERNAL_PLUGINS="none")


def test_verl_use_external_modules_registers():
    assert registered(VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="maspo_verl")


def test_model_external_lib_registers():
    """actor_rollout_ref.model.external_lib=maspo_verl: verl's worker calls import_external_libs."""
    code = (
        "import verl\n"
        "from verl.utils.import_utils import import_external_libs\n"
        "import_external_libs('maspo_verl')\n" + CHECK
    )
    assert registered(code, VERL_USE_EXTERNAL_PLUGINS="none")


def test_importing_maspo_verl_alone_does_not_import_verl():
    result = run_python("import sys, maspo_verl, maspo_verl.algos; print('verl' in sys.modules)")
    assert result.stdout.strip() == "False", result.stderr


def test_a_failing_registration_is_loud():
    """verl swallows plugin errors at DEBUG level; ours prints a traceback to stderr."""
    code = (
        "import maspo_verl.registration as registration\n"
        "def broken():\n"
        "    raise RuntimeError('simulated failure')\n"
        "registration.EXTENSIONS[0] = broken\n" + CHECK
    )
    result = run_python(code)
    assert "maspo-verl: registration with verl FAILED" in result.stderr
    assert "simulated failure" in result.stderr
    assert result.stdout.strip() == "False"
