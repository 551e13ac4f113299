"""The command line of a short CPU run of stock ``verl.trainer.main_ppo`` with the ``hf`` rollout.

Used by the end-to-end tests and runnable by hand::

    python -m maspo_verl.rollout.cpu_e2e ASSETS_DIR OUT_DIR [extra hydra overrides...]

``ASSETS_DIR`` holds a small HF model + tokenizer (with a chat template), ``train.parquet``,
``test.parquet`` (verl's format) and ``reward.py`` defining ``compute_score``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from maspo_verl.cpu_platform import cpu_trainer_env, cpu_trainer_overrides


def e2e_overrides(assets: Path, out: Path, steps: int = 2, n: int = 4) -> list[str]:
    """GRPO, vanilla loss, 4 prompts x n samples, 16/8 tokens, validation + checkpoint at the end."""
    assets, out = Path(assets), Path(out)
    return [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={assets / 'train.parquet'}",
        f"data.val_files={assets / 'test.parquet'}",
        "data.train_batch_size=4",
        "data.val_batch_size=8",
        "data.max_prompt_length=16",
        "data.max_response_length=8",
        "data.dataloader_num_workers=0",
        f"actor_rollout_ref.model.path={assets}",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
        "actor_rollout_ref.rollout.name=hf",
        f"actor_rollout_ref.rollout.n={n}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.dtype=float32",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        f"reward.custom_reward_function.path={assets / 'reward.py'}",
        "reward.custom_reward_function.name=compute_score",
        "reward.num_workers=1",
        "trainer.logger=console",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=1",
        f"trainer.save_freq={steps}",
        f"trainer.test_freq={steps}",
        "trainer.val_before_train=True",
        f"trainer.default_local_dir={out / 'ckpt'}",
    ]


def e2e_command(assets: Path, out: Path, *extra: str, steps: int = 2) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` for the run; ``extra`` overrides come last and win."""
    argv = [sys.executable, "-m", "verl.trainer.main_ppo"]
    argv += cpu_trainer_overrides(1) + e2e_overrides(assets, out, steps=steps) + list(extra)
    env = dict(os.environ, **cpu_trainer_env(), HYDRA_FULL_ERROR="1", TOKENIZERS_PARALLELISM="false")
    return argv, env


def main() -> int:
    assets, out, *extra = sys.argv[1:]
    Path(out).mkdir(parents=True, exist_ok=True)
    argv, env = e2e_command(Path(assets), Path(out), *extra)
    return subprocess.call(argv, env=env, cwd=out)


if __name__ == "__main__":
    raise SystemExit(main())
