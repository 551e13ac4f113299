"""The algorithm's settings: the trainer that runs it, the policy-loss keys, the loss mode, the
advantage shaper, and DAPO's pieces (group filtering, the overlong buffer).

A loss's own values (ranges, non-numbers) are checked by its config class
(``maspo_verl.config``) when verl builds it; these are the checks that need the whole config.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass

from ..config import ACTOR_KEY, CONFIG_CLASSES, KEY_PREFIX
from ..shaping import NO_SHAPER, resolve_shaper


def check_trainer(config) -> None:
    """maspo-verl runs on verl's v1 trainer only; verl 0.9.1's legacy trainer is refused."""
    use_v1 = config.trainer.get("use_v1", True)
    if not use_v1:
        raise ValueError(
            f"trainer.use_v1={use_v1} is not allowed: maspo-verl runs on verl's v1 trainer only. Allowed: "
            "trainer.use_v1=True (verl 0.9.1's default; drop the override). verl's legacy trainer "
            "(verl/trainer/main_ppo_v0.py and RayPPOTrainer, which verl itself marks deprecated) never reads "
            "algorithm.filter_groups, so the dapo preset would lose its dynamic sampling without an error, nor "
            "trainer.v1.sampler, the kit's replay buffer; this package does not test it."
        )


def trainer_step(config, found: dict, dry_run: bool) -> dict:
    check_trainer(config)
    return {}


def check_algorithm_config(config) -> None:
    """Driver-side checks that need the whole config; raise ValueError naming the setting.

    * every ``policy_loss`` key exists in its config class (with a "did you mean" hint);
    * ``loss_mode`` is a registered loss (else the verl releases that have it are named), served by
      a matching config class;
    * a shaper that needs the entropy has verl compute it (``actor.calculate_entropy``);
    * DAPO's pieces take effect: group filtering is not handed to a custom sampler that drops
      it, and the overlong buffer fits the response length.

    Run by ``main_ppo`` (and the benchmark's plan and dry run) before the config is resolved,
    so it is not one of preflight's steps.
    """
    from hydra.utils import get_class

    from .presets import check_loss_registered

    actor = config.actor_rollout_ref.actor
    policy_loss = actor.policy_loss
    target = policy_loss.get("_target_")
    config_class = get_class(target) if target else None
    if config_class is not None and is_dataclass(config_class):
        _check_known_keys(policy_loss, config_class, target)

    loss_mode = policy_loss.get("loss_mode", "vanilla")
    check_loss_registered(loss_mode)  # names the verl releases that have a loss of verl's own
    owner = next((name for name, cls in CONFIG_CLASSES.items() if cls is config_class), None)
    if owner is not None and owner != loss_mode:
        raise ValueError(
            f"{KEY_PREFIX}_target_={target} holds the settings of `{owner}`, but {KEY_PREFIX}loss_mode={loss_mode!r}: "
            f"its settings would be ignored. Use algorithm={loss_mode} (or the matching config class)."
        )

    shaper = policy_loss.get("advantage_shaper", NO_SHAPER)
    spec, _ = resolve_shaper(
        shaper, policy_loss.get("advantage_shaper_kwargs"), policy_loss.get("advantage_shaper_module"), KEY_PREFIX
    )
    if spec is not None and spec.needs_entropy and not (actor.get("calculate_entropy") or actor.get("entropy_coeff")):
        raise ValueError(
            f"{KEY_PREFIX}advantage_shaper={shaper!r} needs the current policy's token entropy, but "
            f"{ACTOR_KEY}.calculate_entropy={actor.get('calculate_entropy')!r}: set it to True "
            f"(verl then computes the entropy in the same forward pass)."
        )
    _check_dapo_pieces(config)


def _check_dapo_pieces(config) -> None:
    filter_groups = config.algorithm.get("filter_groups") or {}
    sampler = config.trainer.get("v1", {}).get("sampler", {}).get("custom_sampler") or {}
    if filter_groups.get("enable") and sampler.get("path") and sampler.get("name"):
        from verl.utils.import_utils import load_module

        sampler_class = getattr(load_module(sampler["path"]), sampler["name"])
        if not getattr(sampler_class, "HONOURS_FILTER_GROUPS", False):
            raise ValueError(
                f"algorithm.filter_groups.enable=True, but trainer.v1.sampler.custom_sampler.name={sampler['name']!r} "
                "is a custom sampler, and verl 0.9.1 hands custom samplers no group-filtering settings: the filtering "
                "would be silently skipped. Drop the custom sampler, or use one that reads them from sampler_kwargs "
                "(maspo_verl.kit.sampler.QuickPollReplayBuffer does)."
            )
    reward = config.get("reward") or {}
    overlong = (reward.get("reward_kwargs") or {}).get("overlong_buffer_cfg") or {}
    if (reward.get("reward_manager") or {}).get("name") == "dapo" and overlong.get("enable"):
        max_response_length = config.data.max_response_length
        length = overlong.get("len")
        if not (isinstance(length, int) and 0 < length <= max_response_length):
            raise ValueError(
                f"reward.reward_kwargs.overlong_buffer_cfg.len={length!r} is not allowed: the overlong buffer must be "
                f"an integer in (0, data.max_response_length={max_response_length}]."
            )


def _check_known_keys(policy_loss, config_class, target: str) -> None:
    known = [f.name for f in fields(config_class)]
    for key in policy_loss:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"Unknown setting {KEY_PREFIX}{key}={policy_loss[key]!r} for {target}.{hint} "
                f"Allowed keys: {', '.join(sorted(k for k in known if not k.startswith('_')))}."
            )
