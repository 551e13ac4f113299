"""Compose verl's real ppo_trainer.yaml with our presets, the way both entry points do."""

import verl  # noqa: F401  (imports our plugin through the verl.plugins entry point)
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

# The minimum a composed config needs before verl can build its dataclasses from it.
BASE_OVERRIDES = [
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
    "actor_rollout_ref.rollout.n=4",
]


def compose_ours(*overrides, resolve=True):
    """`python -m maspo_verl.main_ppo <overrides>`'s config."""
    with initialize_config_module(config_module="maspo_verl_configs", version_base=None):
        config = compose("maspo_trainer", overrides=BASE_OVERRIDES + list(overrides))
    if resolve:
        OmegaConf.resolve(config)
    return config


def compose_stock(*overrides, resolve=True):
    """Stock `python -m verl.trainer.main_ppo <overrides>`'s config."""
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose("ppo_trainer", overrides=BASE_OVERRIDES + list(overrides))
    if resolve:
        OmegaConf.resolve(config)
    return config


def code_path(preset: str) -> tuple[str, str]:
    """(loss_mode, advantage_shaper) of a preset: what decides which code runs in verl's worker."""
    policy_loss = compose_ours(f"algorithm={preset}", resolve=False).actor_rollout_ref.actor.policy_loss
    return policy_loss.loss_mode, policy_loss.get("advantage_shaper", "none")


def build_actor_config(config):
    """The ActorConfig exactly as verl's engine worker builds it (engine_workers.py)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(config.actor_rollout_ref.actor)


def actor_configs(cases: dict, modes: list) -> dict:
    """(case, mode) -> the ActorConfig verl's engine worker would build for the case's overrides and
    that loss_agg_mode."""
    configs = {}
    for case, overrides in cases.items():
        composed = compose_ours(*overrides)
        for mode in modes:
            composed.actor_rollout_ref.actor.loss_agg_mode = mode
            configs[case, mode] = build_actor_config(composed)
    return configs
