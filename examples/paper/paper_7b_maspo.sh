#!/usr/bin/env bash
# MASPO (arXiv 2602.17550) on DeepSeek-R1-Distill-Qwen-7B: the paper's setting, method `maspo`.
# Settings: configs/recipe/paper_7b.yaml (+ _paper_base.yaml) and configs/algorithm/maspo.yaml.
# Values (P = the paper / its public material, D = the DAPO recipe where the paper is silent, O = ours):
#   P  DAPO-Math-17k (deduplicated, 17,398 problems); validation on AIME24, AIME25, AMC23, MATH500,
#      Minerva, OlympiadBench with 32 samples each (Avg@32 / Pass@32); 512 prompts per rollout,
#      32-prompt mini-batches; GRPO advantages, no KL, no entropy bonus
#   P  MASPO mass exponent alpha=0.3 (the recipe's size_settings.maspo.alpha)
#   D  group size 16, prompt length 2048, lr 1e-6 (10 warm-up steps, weight decay 0.1, grad clip 1.0),
#      rollout temperature 1.0 / top_p 1.0, validation temperature 1.0 / top_p 0.7
#   O  response length 8192, 1 node x 8 GPUs, 500 steps, validation and checkpoints every 25 steps
#   O  rollout log-probs (calculate_log_probs): verl logs the training-inference mismatch, training/rollout_probs_diff_*
#   Prompt template: "r1" ({problem} + "Please reason step by step, and put your final answer
#   within \boxed{}.", one user message, no system prompt); prepare the data first:
#     python -m maspo_verl.data prepare all --out ~/data/maspo_verl
# Environment: MASPO_DATA_DIR, AMC (amc23|amc83), MODEL_PATH, NNODES, GPUS_PER_NODE, CKPT_DIR,
# PROJECT_NAME, EXPERIMENT_NAME, LOGGERS, DRY_RUN=1, FIRST_LAUNCH=1, GPU_MEMORY_GB (see run.sh). Extra arguments are Hydra overrides.
# Check before paying for GPUs:  DRY_RUN=1 bash examples/paper/paper_7b_maspo.sh
# First on the GPUs (2 steps, a small validation):  FIRST_LAUNCH=1 bash examples/paper/paper_7b_maspo.sh
set -euo pipefail
RECIPE=paper_7b ALGORITHM=maspo exec bash "$(dirname "${BASH_SOURCE[0]}")/run.sh" "$@"
