"""An agent-loop manager for small runs: verl's own agent loop, without two Ray hops per sample.

verl runs every rollout sample through its agent loop (``AgentLoopWorkerTQ``), and for each
sample makes two calls to other processes that do not depend on the model's size:

* the reward: the sample is packed into a ``DataProto``, pickled and sent to a
  ``RewardLoopWorker`` actor, which runs the reward function and sends the score back;
* the load balancer: before and after each generation the worker asks the
  ``GlobalRequestLoadBalancer`` actor which server to use, even when there is only one.

Next to an LLM's generation both are nothing. For the tiny kit on 2 CPU cores they are most of
the agent loop's CPU time (profile and figures: docs/benchmarks.md#where-a-kit-step-goes). This
manager is verl's ``AgentLoopManagerTQ`` with a worker that

* computes the reward in its own process, with verl's own ``RewardLoopWorker`` code (the same
  reward manager, the same function, the same inputs); only rule-based rewards, a reward
  model keeps verl's remote workers;
* builds each sample's agent loop by calling its class, where Hydra's instantiate would do just
  that with more work (``maspo_verl.compat.build_registered_agent_loops_directly``);
* sends every request straight to the replica's server when the run has exactly one replica;
  with several it keeps verl's load balancer.

Select it with ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=
maspo_verl.rollout.local_agent_loop.LocalAgentLoopManager`` (verl's documented hook for a
custom manager); the CPU kit presets do. Only the synchronous trainer: the asynchronous ones
read the load balancer's in-flight counts, which the direct route would leave at zero.
"""

from __future__ import annotations

from maspo_verl.compat import agent_loop_classes, build_registered_agent_loops_directly

AgentLoopManagerTQ, AgentLoopWorkerTQ, LLMServerClient, RewardLoopWorker = agent_loop_classes()


class _LocalMethod:
    """``handle.method.remote(*args)`` of a Ray actor, answered by a local object's coroutine."""

    def __init__(self, method):
        self._method = method

    def remote(self, *args, **kwargs):
        return self._method(*args, **kwargs)


class LocalRewardWorker:
    """verl's ``RewardLoopWorker`` in this process, shaped like its Ray actor handle."""

    def __init__(self, config):
        self._worker = RewardLoopWorker(config, reward_router_address=None)
        self.compute_score = _LocalMethod(self._worker.compute_score)


class DirectServerClient(LLMServerClient):
    """verl's ``LLMServerClient`` that, once the load balancer has said it knows a single server,
    sends every later request straight to that server. The requests that asked the balancer
    release at once, so its in-flight counts stay balanced."""

    def __init__(self, config, load_balancer_handle):
        super().__init__(config, load_balancer_handle)
        self._only_server = None  # (server_id, handle) once the balancer has shown there is one

    async def _acquire_server(self, request_id: str, **extra):
        if self._only_server is not None:
            return self._only_server
        server_id, handle = await super()._acquire_server(request_id, **extra)
        if len(await self._load_balancer.get_all_servers.remote()) == 1:
            super()._release_server(server_id, request_id=request_id)
            self._only_server = (server_id, handle)
        return server_id, handle

    def _release_server(self, server_id: str, request_id: str | None = None) -> None:
        if self._only_server is None:
            super()._release_server(server_id, request_id=request_id)


def direct_client(client):
    """The direct client for verl's plain ``LLMServerClient``; any other client is kept as it is."""
    if type(client) is not LLMServerClient:
        return client
    return DirectServerClient(client.config, client._load_balancer)


class LocalAgentLoopWorker(AgentLoopWorkerTQ.__ray_actor_class__):
    def __init__(self, config, llm_client, teacher_client=None, reward_loop_worker_handles=None):
        build_registered_agent_loops_directly()
        if reward_loop_worker_handles is not None and not config.reward.reward_model.enable:
            reward_loop_worker_handles = [LocalRewardWorker(config)]
        super().__init__(config, direct_client(llm_client), teacher_client, reward_loop_worker_handles)


class LocalAgentLoopManager(AgentLoopManagerTQ):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import ray

        self.agent_loop_workers_class = ray.remote(LocalAgentLoopWorker)
