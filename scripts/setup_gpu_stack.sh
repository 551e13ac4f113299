#!/usr/bin/env bash
# The transformers GPU users get, beside the newest the test environment has: verl's `vllm` extra
# pins one (5.9.0 for verl 0.9.1). Installs it, without its dependencies, into a folder of the venv
# that only the recipe runs put first on PYTHONPATH (tests/test_recipes_cpu.py; Ray's workers
# inherit it), after checking that the dependencies it requires (tokenizers, huggingface-hub, ...)
# are installed in versions it accepts. torch stays the local CPU build.
# Usage (after scripts/setup_env.sh): source scripts/setup_gpu_stack.sh
# Exports MASPO_GPU_STACK (the folder) and MASPO_GPU_STACK_TRANSFORMERS (the version).
set -euo pipefail

# the version verl's vllm extra pins, read from verl's own metadata (follows a verl upgrade)
MASPO_GPU_STACK_TRANSFORMERS=$(python -c '
import importlib.metadata, re
pins = [re.match(r"transformers==([^;\s]+)", r) for r in importlib.metadata.requires("verl") if "extra == \"vllm\"" in r]
print(next(p.group(1) for p in pins if p))')
MASPO_GPU_STACK="${MASPO_VENV:-$(python -c 'import sys; print(sys.prefix)')}/gpu-stack/transformers-$MASPO_GPU_STACK_TRANSFORMERS"
if [ ! -f "$MASPO_GPU_STACK/.complete" ]; then
  python -m pip install -q --no-deps --target "$MASPO_GPU_STACK" "transformers==$MASPO_GPU_STACK_TRANSFORMERS"
  touch "$MASPO_GPU_STACK/.complete"
fi

# every requirement of the pinned transformers, met by what the venv has installed
python - "$MASPO_GPU_STACK" "$MASPO_GPU_STACK_TRANSFORMERS" <<'PYTHON'
import importlib.metadata, sys
from packaging.requirements import Requirement

target, version = sys.argv[1:]
pinned = next(importlib.metadata.distributions(name="transformers", path=[target]))
for line in pinned.requires or []:
    requirement = Requirement(line)
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
        continue  # an optional extra
    installed = importlib.metadata.version(requirement.name)
    if not requirement.specifier.contains(installed, prereleases=True):
        sys.exit(f"transformers {version} requires {requirement}, but {requirement.name} {installed} is installed")
PYTHON
export MASPO_GPU_STACK MASPO_GPU_STACK_TRANSFORMERS
