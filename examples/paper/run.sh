#!/usr/bin/env bash
# Shared runner of the paper recipes (examples/paper/paper_<size>_<method>.sh call it).
#
#   RECIPE=paper_7b ALGORITHM=maspo bash examples/paper/run.sh [extra Hydra overrides...]
#   DRY_RUN=1 bash examples/paper/paper_7b_maspo.sh        # or: bash ... --dry-run
#
# It runs `python -m maspo_verl.main_ppo recipe=$RECIPE algorithm=$ALGORITHM ...`: the
# settings live in configs/recipe/$RECIPE.yaml and configs/algorithm/$ALGORITHM.yaml; this
# script only adds paths, model, cluster size and tracker from the environment. What the paper
# varies with the model size (MASPO's alpha) is the recipe's too (size_settings), so this script,
# `python -m maspo_verl.main_ppo recipe=...` and `python -m maspo_verl.bench --recipe ...` agree.
#
# Environment (defaults in brackets):
#   MASPO_DATA_DIR   prepared parquet files      [~/data/maspo_verl]  (python -m maspo_verl.data prepare all --out ...)
#   AMC              amc23 (40 problems) | amc83 (FlowRL's 83)          [amc23]
#   MODEL_PATH       model folder or hub id       [the recipe's DeepSeek-R1-Distill-Qwen-*]
#   NNODES           nodes in the Ray cluster     [the recipe's: 1, 1, 2]
#   GPUS_PER_NODE    GPUs per node                [8]
#   CKPT_DIR         checkpoints and validation generations  [checkpoints/maspo_verl_paper/<recipe>_<algorithm>]
#   PROJECT_NAME     tracker project              [maspo_verl_paper]
#   EXPERIMENT_NAME  tracker run name             [<recipe>_<algorithm>]
#   LOGGERS          comma-separated trackers     [console,wandb]   (e.g. console,tensorboard)
#   DRY_RUN=1        compose, check data and batch sizes, build verl's configs, print; no GPU
#   FIRST_LAUNCH=1   the first launch on GPUs (+launch=first): 2 training steps, no validation before
#                    training, one small validation at the end (32 problems x 2 samples); the run is
#                    named <experiment>_first_launch, its checkpoints go to their own folder
#   GPU_MEMORY_GB    the GPUs' memory in GiB, for the memory estimate   [the driver's GPU, else 80]
# Multi-node: start Ray first (`ray start --head` on the head node, `ray start --address=<head>:6379`
# on the others, every node with this package installed), then run the recipe on the head node
# with NNODES set; verl's ray.init() joins the running cluster.
set -euo pipefail

: "${RECIPE:?set RECIPE (paper_1p5b, paper_7b or paper_14b)}"
: "${ALGORITHM:?set ALGORITHM (a preset in configs/algorithm/, e.g. maspo, grpo, dapo)}"

DRY=""
ARGS=()
for arg in "$@"; do
  if [[ "$arg" == "--dry-run" ]]; then DRY=1; else ARGS+=("$arg"); fi
done
[[ "${DRY_RUN:-0}" == "1" ]] && DRY=1

DATA_DIR="${MASPO_DATA_DIR:-$HOME/data/maspo_verl}"
AMC="${AMC:-amc23}"
case "$AMC" in amc23|amc83) ;; *) echo "AMC=$AMC is not allowed: use amc23 (40 problems) or amc83 (83)" >&2; exit 2;; esac
RUN_NAME="${EXPERIMENT_NAME:-${RECIPE}_${ALGORITHM}}"
LAUNCH=()
if [[ "${FIRST_LAUNCH:-0}" == "1" ]]; then
  RUN_NAME="${RUN_NAME}_first_launch"
  LAUNCH=("+launch=first")
  [[ -n "${CKPT_DIR:-}" ]] && CKPT_DIR="${CKPT_DIR}_first_launch"
fi
PROJECT="${PROJECT_NAME:-maspo_verl_paper}"
LOGGER_LIST="[$(echo "${LOGGERS:-console,wandb}" | sed 's/[^,][^,]*/"&"/g')]"

OVERRIDES=(
  "recipe=${RECIPE}"
  "algorithm=${ALGORITHM}"
  "data.train_files=${DATA_DIR}/dapo_math_17k.parquet"
  "data.val_files=[${DATA_DIR}/aime24.parquet,${DATA_DIR}/aime25.parquet,${DATA_DIR}/${AMC}.parquet,${DATA_DIR}/math500.parquet,${DATA_DIR}/minerva.parquet,${DATA_DIR}/olympiadbench.parquet]"
  "trainer.project_name=${PROJECT}"
  "trainer.experiment_name=${RUN_NAME}"
  "trainer.logger=${LOGGER_LIST}"
)
[[ -n "${MODEL_PATH:-}" ]] && OVERRIDES+=("actor_rollout_ref.model.path=${MODEL_PATH}")
[[ -n "${NNODES:-}" ]] && OVERRIDES+=("trainer.nnodes=${NNODES}")
[[ -n "${GPUS_PER_NODE:-}" ]] && OVERRIDES+=("trainer.n_gpus_per_node=${GPUS_PER_NODE}")
[[ -n "${CKPT_DIR:-}" ]] && OVERRIDES+=("trainer.default_local_dir=${CKPT_DIR}")
OVERRIDES+=(${LAUNCH[@]+"${LAUNCH[@]}"} ${ARGS[@]+"${ARGS[@]}"})

if [[ "${MASPO_PRINT_OVERRIDES:-0}" == "1" ]]; then  # for tests: the exact override list
  printf '%s\n' "${OVERRIDES[@]}"
  exit 0
fi

PYTHON="${PYTHON:-python}"
FLAGS=()
[[ -n "$DRY" ]] && FLAGS+=("--dry-run")
[[ -n "${GPU_MEMORY_GB:-}" ]] && FLAGS+=("--gpu-memory-gb" "${GPU_MEMORY_GB}")
exec "$PYTHON" -m maspo_verl.main_ppo ${FLAGS[@]+"${FLAGS[@]}"} "${OVERRIDES[@]}"
