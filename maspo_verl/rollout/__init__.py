"""An ``hf`` rollout backend for stock verl: generation with Hugging Face ``model.generate``.

Select it with ``actor_rollout_ref.rollout.name=hf`` once ``register_hf_rollout()`` has run
in every process (the ``verl.plugins`` entry point does that). It plugs into verl's two
rollout registries:

* ``RolloutReplicaRegistry`` (public ``register(name, loader)``): the trainer-side replica
  that launches the server actor (``HFReplica``);
* ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` (a dict keyed by ``(name, mode)``, no
  public API in verl 0.9.1): the worker-side adapter that receives weights (``HFServerAdapter``).

Importing this package does not register anything and does not import verl.
"""

from __future__ import annotations

import warnings

ROLLOUT_NAME = "hf"
_ADAPTER_FQN = "maspo_verl.rollout.hf_adapter.HFServerAdapter"


def _load_hf_replica():
    from maspo_verl.rollout.hf_replica import HFReplica

    return HFReplica


def register_hf_rollout() -> str | None:
    """Register the ``hf`` rollout in verl's registries; return the name to select it.

    Idempotent. If verl or another plugin already owns ``hf`` in either registry, warns and
    keeps theirs (returns None); raises if verl's registries are missing.
    """
    try:
        from verl.workers.rollout import base as rollout_base
        from verl.workers.rollout.replica import RolloutReplicaRegistry
    except Exception as exc:  # pragma: no cover - depends on the installed verl
        raise RuntimeError(f"maspo_verl: cannot import verl's rollout registries: {exc!r}") from exc

    registry = getattr(rollout_base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise RuntimeError("maspo_verl: verl.workers.rollout.base._ROLLOUT_REGISTRY is missing; unsupported verl")

    key = (ROLLOUT_NAME, "async")
    current = registry.get(key)
    replica_loader = RolloutReplicaRegistry._registry.get(ROLLOUT_NAME)
    foreign_adapter = current is not None and current != _ADAPTER_FQN
    foreign_replica = replica_loader is not None and replica_loader is not _load_hf_replica
    if foreign_adapter or foreign_replica:
        warnings.warn(
            f"maspo-verl: verl already has a rollout named {ROLLOUT_NAME!r} "
            f"({current or replica_loader}); keeping it and not registering ours.",
            stacklevel=2,
        )
        return None

    registry[key] = _ADAPTER_FQN
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_replica)
    return ROLLOUT_NAME


__all__ = ["ROLLOUT_NAME", "register_hf_rollout"]
