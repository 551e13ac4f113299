"""The actor's ``policy_loss`` configs: verl's PolicyLossConfig plus our settings.

* ``BasePolicyLossConfig``: verl's class plus the advantage-shaper keys. Presets that run one
  of verl's own losses (vanilla, sapo, gspo, cispo) use it, so a shaper works with them too.
* One class per declared loss (``maspo_verl.algos.LOSSES``), generated from its Params by
  ``policy_loss_config_class`` and assigned by name below (``MASPOPolicyLossConfig``,
  ``DACPolicyLossConfig``, ``BAPOPolicyLossConfig``). Select one in Hydra with
  ``actor_rollout_ref.actor.policy_loss._target_=maspo_verl.config.<Class>`` (the presets do this).

verl instantiates the class on the driver inside ``validate_config``, before Ray or any GPU is
touched, so a bad value stops the run there with a message naming the key, the value and the
allowed range (``maspo_verl.refusal`` prints it as the refusal it is);
``maspo_verl.preflight.check_algorithm_config`` adds the checks that need the whole config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Optional

from verl.workers.config import PolicyLossConfig

from .algos import bapo, dac, maspo
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


# loss_mode -> config class: one per declared loss, in the order of the assignments below
# (tests/test_losses.py checks it against maspo_verl.algos.LOSSES)
CONFIG_CLASSES: dict[str, type] = {}


def policy_loss_config_class(spec: LossSpec) -> type:
    """The ``policy_loss`` config class of a declared loss: a dataclass with its policy-loss
    settings (its Params minus the actor keys), checked by its Params' rules, named
    ``spec.config_class_name`` and listed in ``CONFIG_CLASSES``; assign it to that name below."""
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
    CONFIG_CLASSES[spec.name] = cls
    return cls


MASPOPolicyLossConfig = policy_loss_config_class(maspo.LOSS)
DACPolicyLossConfig = policy_loss_config_class(dac.LOSS)
BAPOPolicyLossConfig = policy_loss_config_class(bapo.LOSS)
