"""``BaseRollout`` server adapter of the ``hf`` rollout, living in the training worker.

In verl's colocated (hybrid) mode each training worker builds the rollout class registered
for ``rollout.name`` and, after every actor update, calls ``update_weights`` with a
generator of ``(hf_name, full_tensor)`` pairs taken from the FSDP engine (plus
``resume``/``release`` around it). vLLM ships those tensors to its engine through CUDA IPC;
we send them to the replica's ``HFRolloutServer`` through Ray's object store in buckets,
which works on CPU and on one GPU alike and is cheap for the small models this is for.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Generator, Iterable

import ray
import torch
from verl.workers.rollout.base import BaseRollout

from maspo_verl.rollout.hf_replica import server_actor_name

logger = logging.getLogger(__name__)


class HFServerAdapter(BaseRollout):
    """Client side of one ``HFRolloutServer``: weight sync and sleep/wake-up."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        # One model copy per replica (tp = dp = pp = 1), so each trainer rank owns a server.
        self.replica_rank = rank if replica_rank == -1 else replica_rank
        self.rollout_rank = 0
        self.is_leader_rank = True
        self.server_handle = None
        self.sleep_level = 1

    def _server(self):
        """Look the server up lazily: it is launched after the training workers."""
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_actor_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]):
        if self.config.free_cache_engine:
            await self._server().wake_up.remote(tags=tags)

    async def release(self):
        if self.config.free_cache_engine:
            await self._server().sleep.remote()

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        global_steps: int = None,
        peft_config: Any = None,
        **kwargs,
    ):
        """Stream full tensors to the server in buckets of ``update_weights_bucket_megabytes``."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout only accepts wire_format='named_tensors', got {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(
                "hf rollout cannot load LoRA adapters; set actor_rollout_ref.model.lora.merge=True"
            )
        server = self._server()
        bucket_bytes = int(self.config.checkpoint_engine.update_weights_bucket_megabytes) << 20
        loaded = 0
        for bucket in _buckets(weights, bucket_bytes):
            loaded += await server.update_weights.remote(bucket)
        if loaded == 0:
            raise RuntimeError("hf rollout: the actor sent no weight the rollout model knows")
        await server.clear_kv_cache.remote()
        if global_steps is not None:
            await server.set_global_steps.remote(global_steps)

    def generate_sequences(self, prompts):
        raise NotImplementedError("the hf rollout is served through the agent loop (async server mode)")


def _buckets(weights: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int):
    """Group ``(name, tensor)`` pairs into host-memory lists of about ``bucket_bytes``."""
    bucket, size = [], 0
    for name, tensor in weights:
        host = tensor.detach().to("cpu", copy=True)
        bucket.append((name, host))
        size += host.numel() * host.element_size()
        if size >= bucket_bytes:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket
