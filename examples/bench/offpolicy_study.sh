#!/usr/bin/env bash
# The off-policy study of docs/benchmarks.md ("MASPO off-policy"): the methods the MASPO paper's
# robustness claim is about, MASPO's four ablations and two mechanism variants (off by default in
# the preset), in the stress regime (16 updates per rollout) and the standard one (4), 8 seeds,
# with the instrument's controls. Started again, it skips the runs that finished.
#
#   bash examples/bench/offpolicy_study.sh                 # the whole study (hours on 2 cores)
#   PLAN=1 bash examples/bench/offpolicy_study.sh          # the runs and their settings, nothing run
#   OUT=/data/study SEEDS=0,1,2 bash examples/bench/offpolicy_study.sh --regimes stress
# Extra arguments go to `python -m maspo_verl.bench` and come last, so they win.
set -euo pipefail

OUT=${OUT:-outputs/offpolicy_study}
SEEDS=${SEEDS:-0,1,2,3,4,5,6,7}
# grpo first: every other preset is compared with it seed by seed
PRESETS=grpo,dapo,maspo,maspo_gate_only,maspo_no_mass,maspo_no_risk,maspo_two_sided,sapo,cispo,dppo_tv

python -m maspo_verl.bench --regimes stress,standard --presets "$PRESETS" --seeds "$SEEDS" --out "$OUT" \
  --variant "maspo_dual_clip=maspo actor_rollout_ref.actor.policy_loss.dual_clip_c=3" \
  --variant "maspo_sigma02=maspo actor_rollout_ref.actor.policy_loss.sigma_base=0.2" \
  ${PLAN:+--plan} "$@"
