"""``RolloutReplica`` for the ``hf`` rollout: launches one ``HFRolloutServer`` per replica node.

verl's ``LLMServerManager`` builds ``world_size / rollout_world_size`` replicas and, in the
colocated (hybrid) mode, hands each the training workers it shares devices with. Like the
vLLM replica, we start the server actor on the workers' node and give it the workers'
visible devices; unlike vLLM there is no HTTP server and no multi-node engine, so a replica
is a single actor (tensor/pipeline/data parallel sizes must be 1).
"""

from __future__ import annotations

import asyncio

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutReplica

from maspo_verl.rollout.hf_server import HFRolloutServer

SERVER_NAME_PREFIX = "hf_"


def server_actor_name(replica_rank: int, node_rank: int = 0) -> str:
    """Ray actor name shared by the replica (creator) and the server adapter (lookup)."""
    return f"{SERVER_NAME_PREFIX}server_{replica_rank}_{node_rank}"


def _node_and_devices(worker_self) -> tuple[str, str]:
    """Run inside a training worker: its node id and its accelerator ids (may be empty)."""
    from verl.utils.device import get_resource_name

    ctx = ray.get_runtime_context()
    ids = ctx.get_accelerator_ids().get(get_resource_name(), [])
    return ctx.get_node_id(), ",".join(str(i) for i in ids)


class HFReplica(RolloutReplica):
    """A replica backed by one ``HFRolloutServer`` Ray actor."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.world_size != 1:
            raise ValueError(
                "the hf rollout runs one model copy per replica: set rollout.tensor_model_parallel_size=1 "
                f"(and data/pipeline parallel size 1); got world_size={self.world_size}"
            )
        self.server_class = ray.remote(HFRolloutServer)

    def _server_name(self) -> str:
        if self.is_reward_model:
            return f"{SERVER_NAME_PREFIX}server_reward_{self.replica_rank}_0{self.name_suffix}"
        if self.is_teacher_model:
            return f"{SERVER_NAME_PREFIX}server_teacher_{self.replica_rank}_0{self.name_suffix}"
        return server_actor_name(self.replica_rank) + self.name_suffix

    async def launch_servers(self):
        """Start the server actor next to this replica's worker and load the model."""
        from verl.plugin.platform import get_platform

        assert len(self.workers) == 1, f"expected 1 worker per hf replica, got {len(self.workers)}"
        node_id, devices = await self.workers[0].__ray_call__.remote(_node_and_devices)
        platform = get_platform()
        env_vars = {**{var: "1" for var in platform.ray_noset_envvars()}, **platform.rollout_env_vars()}
        server = self.server_class.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            runtime_env={"env_vars": env_vars},
            name=self._server_name(),
            max_concurrency=self.max_concurrency,
            num_cpus=0,
        ).remote(
            config=self.config,
            model_config=self.model_config,
            rollout_mode=self.rollout_mode,
            workers=self.workers,
            replica_rank=self.replica_rank,
            node_rank=0,
            gpus_per_node=self.gpus_per_replica_node,
            nnodes=1,
            cuda_visible_devices=devices,
        )
        await server.launch_server.remote()
        self.servers = [server]
        host, tag = await server.get_server_address.remote()
        self._server_handle = server
        self._server_address = f"{host}:{tag}"

    async def sleep(self):
        await asyncio.gather(*[s.wait_for_requests_to_drain.remote() for s in self.servers])
        await super().sleep()

    async def abort_request(self, request_id: str) -> dict:
        return await self.servers[0].abort_request.remote(request_id)
