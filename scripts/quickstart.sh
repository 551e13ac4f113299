#!/usr/bin/env bash
# The CPU quickstart (README's first command): set up on a fresh machine, build the tiny kit,
# train it with MASPO through verl's real trainer, print a summary and write a plot.
# Extra arguments go to `python -m maspo_verl.quickstart` (e.g. --algorithm grpo --steps 30).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/scripts/setup_env.sh"
cd "$root"
python -m maspo_verl.quickstart "$@"
