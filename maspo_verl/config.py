"""The actor's ``policy_loss`` configs: verl's PolicyLossConfig plus our settings.

* ``BasePolicyLossConfig``: verl's class plus the advantage-shaper keys. Presets that run one
  of verl's own losses (vanilla, sapo, gspo, cispo) use it, so a shaper works with them too.
* One class per declared loss (``maspo_verl.algos.LOSSES``), generated from its Params:
  ``MASPOPolicyLossConfig``, ``DACPolicyLossConfig``, ``BAPOPolicyLossConfig``, ...
  Select one in Hydra with ``actor_rollout_ref.actor.policy_loss._target_=maspo_verl.config.<Class>``
  (the presets do this).

verl instantiates the class on the driver inside ``validate_config``, before Ray or any GPU is
touched, so a bad value stops the run there with a message naming the key, the value and the
allowed range; ``check_algorithm_config`` adds the checks that need the whole config.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from typing import Optional

from verl.workers.config import PolicyLossConfig

from .algos import LOSSES
from .algos.common import (
    DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS,
    POLICY_LOSS_KEY,
    LossSpec,
    check_nonfinite_limit,
)
from .shaping import NO_SHAPER, resolve_shaper

KEY_PREFIX = POLICY_LOSS_KEY + "."
ACTOR_KEY = "actor_rollout_ref.actor"


@dataclass
class BasePolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus the advantage shaper (see maspo_verl.shaping) and the policy
    of our losses for non-finite inputs (see maspo_verl.losses; verl's own losses ignore it)."""

    advantage_shaper: str = NO_SHAPER
    advantage_shaper_kwargs: dict = field(default_factory=dict)
    advantage_shaper_module: Optional[str] = None
    max_consecutive_nonfinite_calls: int = DEFAULT_MAX_CONSECUTIVE_NONFINITE_CALLS

    def __post_init__(self):
        kwargs = self.advantage_shaper_kwargs
        if not isinstance(kwargs, Mapping):
            raise ValueError(f"{KEY_PREFIX}advantage_shaper_kwargs={kwargs!r} must be a mapping of settings.")
        resolve_shaper(self.advantage_shaper, kwargs, self.advantage_shaper_module, KEY_PREFIX)
        check_nonfinite_limit(self.max_consecutive_nonfinite_calls)


def _config_class(spec: LossSpec) -> type:
    """A dataclass with the loss's policy-loss settings (its Params minus the actor keys)."""
    own = [f for f in fields(spec.params) if f.name not in spec.actor_keys]
    checked_params = type(spec.params.__name__, (spec.params,), {"_key_prefix": KEY_PREFIX})

    def __post_init__(self):
        BasePolicyLossConfig.__post_init__(self)
        checked_params(**{f.name: getattr(self, f.name) for f in own})

    cls = make_dataclass(
        spec.config_class_name,
        [("loss_mode", str, field(default=spec.name))] + [(f.name, f.type, field(default=f.default)) for f in own],
        bases=(BasePolicyLossConfig,),
        namespace={"__post_init__": __post_init__, "__doc__": f"policy_loss config of `{spec.name}`: {spec.summary}"},
    )
    cls.__module__ = __name__  # importable (and picklable) as maspo_verl.config.<name>
    return cls


CONFIG_CLASSES: dict[str, type] = {spec.name: _config_class(spec) for spec in LOSSES}
globals().update({cls.__name__: cls for cls in CONFIG_CLASSES.values()})
MASPOPolicyLossConfig = CONFIG_CLASSES["maspo"]


def check_algorithm_config(config) -> None:
    """Driver-side checks that need the whole config; raise ValueError naming the setting.

    * every ``policy_loss`` key exists in its config class (with a "did you mean" hint);
    * ``loss_mode`` is a registered loss (else the verl releases that have it are named), served by
      a matching config class;
    * a shaper that needs the entropy has verl compute it (``actor.calculate_entropy``);
    * DAPO's pieces take effect: group filtering is not handed to a custom sampler that drops
      it, and the overlong buffer fits the response length.
    """
    from hydra.utils import get_class

    from .preset_checks import check_loss_registered

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
