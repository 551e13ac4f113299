"""A tiny-model kit so verl's real PPO/GRPO trainer can run RL on a CPU in minutes.

``build_kit()`` writes (once, then reuses) a small Qwen2 checkpoint warm-started
on two-digit addition, verl-format train/val parquet files and a rule reward
file. See ``python -m maspo_verl.kit --help``.
"""

from .build import KitPaths, KitSettings, build_kit
from .model import ModelShape, WarmStartRecipe

__all__ = ["KitPaths", "KitSettings", "ModelShape", "WarmStartRecipe", "build_kit"]
