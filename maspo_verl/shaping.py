"""Advantage shapers: per-token functions of the advantages applied just before the
policy-gradient term of ANY policy loss (maspo, vanilla, dac, ...). No verl import here.

A shaper takes ``ShaperInputs`` (advantages, response mask, old and current log-probs, and
the current policy's token entropy when it asks for it) and its validated params, and returns
``(shaped_advantages, {metric: 0-d tensor})``; the metrics are logged as
``actor/shaper/<name>/<metric>``. Select one in the actor's policy-loss config:

    actor_rollout_ref.actor.policy_loss.advantage_shaper=entropy_adv
    actor_rollout_ref.actor.policy_loss.advantage_shaper_kwargs.alpha=0.4

Register your own with the decorator, in a module named by ``advantage_shaper_module`` (it is
imported wherever the config is built: on the driver, where a bad name or value stops the run
before Ray starts, and in every worker):

    from dataclasses import dataclass
    from maspo_verl.algos.common import Params
    from maspo_verl.shaping import register_advantage_shaper

    @dataclass
    class ScaleParams(Params):
        factor: float = 2.0
        LABEL = "scale"
        RULES = (("factor", lambda p, v: v > 0, "> 0"),)

    @register_advantage_shaper("scale", params=ScaleParams)
    def scale(inputs, params):
        return inputs.advantages * params.factor, {}

The verl side (``maspo_verl.hook``) hands the shaper the entropy verl's ``ppo_loss`` already
computed (``actor.calculate_entropy=True``); no second forward pass.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .algos.entropy_adv import EntropyAdvParams, ShaperInputs, entropy_advantage

NO_SHAPER = "none"


@dataclass(frozen=True)
class ShaperSpec:
    name: str
    fn: Callable[[ShaperInputs, Any], tuple]
    params: Optional[type]
    needs_entropy: bool


SHAPERS: dict[str, ShaperSpec] = {}


def register_advantage_shaper(name: str, params: Optional[type] = None, needs_entropy: bool = False):
    """Decorator: make ``fn(inputs, params) -> (advantages, metrics)`` selectable by ``name``."""
    if not name or name == NO_SHAPER:
        raise ValueError(f"an advantage shaper cannot be named {name!r}")

    def decorator(fn):
        existing = SHAPERS.get(name)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"an advantage shaper named {name!r} is already registered ({existing.fn.__module__})")
        SHAPERS[name] = ShaperSpec(name=name, fn=fn, params=params, needs_entropy=needs_entropy)
        return fn

    return decorator


register_advantage_shaper("entropy_adv", params=EntropyAdvParams, needs_entropy=True)(entropy_advantage)


def resolve_shaper(name: str, kwargs: Optional[Mapping], module: Optional[str], key_prefix: str):
    """(spec, params) for a configured shaper, or (None, None) for ``none``.

    Raises ValueError naming the key, the value and what is allowed.
    """
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"{key_prefix}advantage_shaper_module={module!r} cannot be imported: {exc}") from exc
    kwargs = dict(kwargs or {})
    if name in (None, "", NO_SHAPER):
        if kwargs:
            raise ValueError(
                f"{key_prefix}advantage_shaper_kwargs={kwargs} given, but no advantage_shaper is selected."
            )
        return None, None
    spec = SHAPERS.get(name)
    if spec is None:
        known = ", ".join(sorted(SHAPERS)) or "(none registered)"
        raise ValueError(
            f"{key_prefix}advantage_shaper={name!r} is not a registered advantage shaper. Known: {NO_SHAPER}, {known} "
            f"(register your own with maspo_verl.shaping.register_advantage_shaper and name its module in "
            f"{key_prefix}advantage_shaper_module)."
        )
    if spec.params is None:
        if kwargs:
            raise ValueError(f"{key_prefix}advantage_shaper_kwargs={kwargs}: shaper {name!r} takes no settings.")
        return spec, None
    known_keys = spec.params.param_names() if hasattr(spec.params, "param_names") else []
    unknown = sorted(set(kwargs) - set(known_keys))
    if unknown:
        raise ValueError(
            f"Unknown setting {key_prefix}advantage_shaper_kwargs.{unknown[0]}={kwargs[unknown[0]]!r} for shaper "
            f"{name!r}. Allowed keys: {', '.join(known_keys)}."
        )
    checked = type(spec.params.__name__, (spec.params,), {"_key_prefix": f"{key_prefix}advantage_shaper_kwargs."})
    checked(**kwargs)  # validates, naming the key as the user wrote it
    return spec, spec.params(**kwargs)
