"""An ``hf`` rollout backend for stock verl: generation with Hugging Face ``model.generate``.

Select it with ``actor_rollout_ref.rollout.name=hf`` once ``register_hf_rollout()`` has run
in every process (the ``verl.plugins`` entry point does that). It plugs into verl's two
rollout registries:

* ``RolloutReplicaRegistry`` (public ``register(name, loader)``): the trainer-side replica
  that launches the server actor (``HFReplica``);
* ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` (no public API in verl 0.9.1, reached
  through ``maspo_verl.compat``): the worker-side adapter that receives weights
  (``HFServerAdapter``).

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
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from maspo_verl.compat import replica_loader, rollout_adapter_registry

    registry = rollout_adapter_registry()
    key = (ROLLOUT_NAME, "async")
    current = registry.get(key)
    loader = replica_loader(ROLLOUT_NAME)
    foreign_adapter = current is not None and current != _ADAPTER_FQN
    foreign_replica = loader is not None and loader is not _load_hf_replica
    if foreign_adapter or foreign_replica:
        warnings.warn(
            f"maspo-verl: verl already has a rollout named {ROLLOUT_NAME!r} "
            f"({current or loader}); keeping it and not registering ours.",
            stacklevel=2,
        )
        return None

    registry[key] = _ADAPTER_FQN
    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_hf_replica)
    return ROLLOUT_NAME


__all__ = ["ROLLOUT_NAME", "register_hf_rollout"]
