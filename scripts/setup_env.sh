#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install maspo-verl into it.
# Idempotent: a second run only re-checks. Usage: source scripts/setup_env.sh
# Env: MASPO_VENV (default .venv in the repository root), PYTHON (default python3).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MASPO_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.maspo-verl-installed"
if [ ! -f "$stamp" ] || [ "$root/setup.py" -nt "$stamp" ]; then
  # torch first, pinned: this build is CPU-only and local on CI machines; an unpinned torch
  # would pull several GB of CUDA packages. GPU users keep the torch they have.
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "torch==${MASPO_TORCH_VERSION:-2.13.0}"
  "$venv/bin/python" -m pip install -q -e "$root[test]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
