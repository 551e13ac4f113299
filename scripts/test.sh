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
python -m pytest -q "$@"
