#!/usr/bin/env bash
# The test command (README, CI): set up the environment on a fresh machine, lint, then run
# pytest. GPU-only tests are skipped without CUDA. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/setup_env.sh"
# the transformers GPU users get, for the paper recipes in miniature (tests/test_recipes_cpu.py)
source "$root/scripts/setup_gpu_stack.sh"
cd "$root"
ruff check .
ruff format --check .
# two processes, one test file each at a time (conftest.py groups them and puts the files that
# launch verl's trainer first, costliest first; --no-loadscope-reorder keeps that order instead of
# xdist's by test count). MASPO_TEST_WORKERS=0 runs in one process.
python -m pytest -q -n "${MASPO_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"
