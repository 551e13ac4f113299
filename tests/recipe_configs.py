"""The paper recipes' configs, composed and resolved the way each entry path composes them.

Composing verl's ppo_trainer with a recipe and a preset takes about a second (Hydra reads some 30
YAML files each time), and two test files compare every recipe x every preset
(tests/test_entry_paths.py, tests/test_recipes_cpu.py), so each config is composed once per pytest
session. Every function returns the resolved config's leaves, {"a.b.c": value}.
"""

import functools
import os
import subprocess
from pathlib import Path

import verl  # noqa: F401  (registers our plugin, the Hydra search path and the kit resolver)
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from maspo_verl.bench.sweep import available_presets, available_recipes
from maspo_verl.preflight.presets import leaves

REPO = Path(__file__).resolve().parents[1]
RECIPES = tuple(available_recipes())
PRESETS = tuple(available_presets())


def resolved_leaves(config) -> dict:
    OmegaConf.resolve(config)
    return leaves(OmegaConf.to_container(config))


@functools.cache
def main_ppo(recipe: str, preset: str, *extra: str) -> dict:
    """`python -m maspo_verl.main_ppo recipe=<recipe> algorithm=<preset> <extra>`."""
    from maspo_verl.launch import compose_config

    return resolved_leaves(compose_config([f"recipe={recipe}", f"algorithm={preset}", *extra]))


@functools.cache
def stock_verl(*overrides: str) -> dict:
    """Stock `python -m verl.trainer.main_ppo <overrides>` (`+recipe=...`, `+algorithm=...`)."""
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return resolved_leaves(compose("ppo_trainer", overrides=list(overrides)))


def shell_overrides(recipe: str, preset: str) -> list[str]:
    """What `RECIPE=<recipe> ALGORITHM=<preset> bash examples/paper/run.sh` hands to main_ppo."""
    env = dict(os.environ, RECIPE=recipe, ALGORITHM=preset, MASPO_PRINT_OVERRIDES="1")
    out = subprocess.run(["bash", str(REPO / "examples" / "paper" / "run.sh")], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.splitlines()


@functools.cache
def shell(recipe: str, preset: str) -> dict:
    """The shell recipe: run.sh's override list through `python -m maspo_verl.main_ppo`."""
    from maspo_verl.launch import compose_config

    return resolved_leaves(compose_config(shell_overrides(recipe, preset)))


@functools.cache
def bench(recipe: str, preset: str, out: Path) -> dict:
    """`python -m maspo_verl.bench --recipe <recipe> --presets <preset> --seeds 0`: the config its run trains
    with (the bench's `--plan` and `--dry-run` read the same)."""
    from maspo_verl.bench.plan import run_config
    from maspo_verl.bench.sweep import plan_recipes

    (spec,) = plan_recipes([recipe], [preset], [0])
    return leaves(OmegaConf.to_container(run_config(spec, out)))
