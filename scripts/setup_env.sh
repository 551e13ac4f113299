#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install maspo-verl into it.
# Idempotent: a second run only re-checks. Usage: source scripts/setup_env.sh
# Env: MASPO_VENV (default .venv in the repository root), PYTHON (default python3),
#      MASPO_TORCH_VERSION (default 2.13.0), MASPO_INSTALLER (uv or pip; default uv, pip if uv
#      cannot be had).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MASPO_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.maspo-verl-installed"
if [ ! -f "$stamp" ] || [ "$root/setup.py" -nt "$stamp" ]; then
  py="$venv/bin/python"
  # torch first, pinned, with pip: pip reads this machine's configuration (the local CPU build in
  # its find-links, its constraints), which uv does not; uv would resolve the same pin to a CUDA
  # build of several GB. GPU users keep the torch they have.
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q "torch==${MASPO_TORCH_VERSION:-2.13.0}"
  torch_before=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null)  # numpy is not in yet: torch warns
  # everything else with uv (measured on a fresh 2-core machine, cold caches: 1 min 33 s against
  # 5 min 35 s for pip; docs/benchmarks.md), pip where uv cannot be had
  installer=${MASPO_INSTALLER:-uv}
  if [ "$installer" = uv ] && ! "$py" -m pip install -q uv; then
    echo "setup_env: uv could not be installed; installing with pip" >&2
    installer=pip
  fi
  if [ "$installer" = uv ]; then
    "$venv/bin/uv" pip install -q --python "$py" -e "$root[test]"
  else
    "$py" -m pip install -q -e "$root[test]"
  fi
  torch_after=$("$py" -c 'import torch; print(torch.__version__)')
  if [ "$torch_after" != "$torch_before" ]; then
    echo "setup_env: installing maspo-verl replaced torch $torch_before with $torch_after; reinstall torch==${MASPO_TORCH_VERSION:-2.13.0} with pip" >&2
    exit 1
  fi
  case "$torch_after" in
    *+cpu) ;;
    *) command -v nvidia-smi >/dev/null || echo "setup_env: torch $torch_after is not a CPU build and this machine has no nvidia-smi: pip's configuration chose it (a CUDA build works on CPU, several GB larger)" >&2 ;;
  esac
  echo "setup_env: torch $torch_after, maspo-verl installed with $installer" >&2
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
