"""The agent-loop manager of the CPU kit (maspo_verl/rollout/local_agent_loop.py): what it changes
in verl's agent loop (the reward in-process, no load-balancer hop for a single server, agent loops
built without Hydra's merge) gives the same results as verl's own path. Its runs inside verl's
trainer are every kit run (tests/test_e2e_kit.py; two replicas: tests/test_e2e_dp.py)."""

import asyncio
import importlib
import inspect

import pytest

from maspo_verl import compat
from maspo_verl.rollout.local_agent_loop import DirectServerClient, direct_client

# ---------------------------------------------------------------- the direct route to one server


class _Remote:
    def __init__(self, fn, log, name):
        self.fn, self.log, self.name = fn, log, name

    def remote(self, *args, **kwargs):
        self.log.append(self.name)
        answer = asyncio.get_running_loop().create_future()  # awaited, or dropped as verl drops a release
        answer.set_result(self.fn(*args, **kwargs))
        return answer


class FakeBalancer:
    """verl's GlobalRequestLoadBalancer as the client sees it, counting in-flight requests."""

    def __init__(self, servers):
        self.servers, self.inflight, self.calls = servers, dict.fromkeys(servers, 0), []
        self.acquire_server = _Remote(self._acquire, self.calls, "acquire")
        self.release_server = _Remote(self._release, self.calls, "release")
        self.get_all_servers = _Remote(lambda: list(self.servers), self.calls, "servers")
        self.require_acquire_fields = _Remote(lambda: [], self.calls, "fields")
        self.require_release_fields = _Remote(lambda: [], self.calls, "fields")

    def _acquire(self, request_id):
        server_id = min(self.inflight, key=self.inflight.get)
        self.inflight[server_id] += 1
        return server_id, self.servers[server_id]

    def _release(self, server_id):
        self.inflight[server_id] -= 1


async def _requests(client, count):
    async def one(i):
        server_id, handle = await client._acquire_server(f"r{i}")
        await asyncio.sleep(0)
        client._release_server(server_id, request_id=f"r{i}")
        return handle

    return await asyncio.gather(*(one(i) for i in range(count)))


def test_one_server_is_asked_for_once_then_reached_directly():
    balancer = FakeBalancer({"s0": "handle0"})
    client = DirectServerClient(config=None, load_balancer_handle=balancer)
    handles = asyncio.run(_requests(client, 16))
    assert handles == ["handle0"] * 16
    # the first requests, sent before any answer came back, all asked the balancer
    assert balancer.calls.count("acquire") == 16
    assert balancer.inflight == {"s0": 0}, "every request that asked the balancer released"
    before = len(balancer.calls)
    asyncio.run(_requests(client, 8))
    assert len(balancer.calls) == before, "once the single server is known, the balancer is never asked"


def test_several_servers_keep_the_balancer():
    balancer = FakeBalancer({"s0": "h0", "s1": "h1"})
    client = DirectServerClient(config=None, load_balancer_handle=balancer)
    handles = asyncio.run(_requests(client, 10))
    assert sorted(set(handles)) == ["h0", "h1"]
    assert balancer.calls.count("acquire") == 10 and balancer.calls.count("release") == 10
    assert balancer.inflight == {"s0": 0, "s1": 0}


def test_only_verls_plain_client_is_replaced():
    _, _, LLMServerClient, _ = compat.agent_loop_classes()
    plain = LLMServerClient(config=None, load_balancer_handle=FakeBalancer({"s0": "h"}))
    assert type(direct_client(plain)) is DirectServerClient

    class Custom(LLMServerClient):
        pass

    custom = Custom(config=None, load_balancer_handle=None)
    assert direct_client(custom) is custom


# ---------------------------------------------------------------- agent loops built without Hydra


@pytest.fixture
def fresh_agent_loop_module(monkeypatch):
    """verl's agent-loop module with its own `hydra` restored after the test."""
    module = importlib.import_module(compat.AGENT_LOOP_MODULE)
    monkeypatch.setattr(
        module, "hydra", module.hydra if not isinstance(module.hydra, compat._Facade) else module.hydra._module
    )
    return module


class Recorder:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_a_registered_agent_loop_is_built_as_hydra_builds_it(fresh_agent_loop_module):
    module = fresh_agent_loop_module
    config = {"_target_": f"{__name__}.Recorder"}
    wrapped = module.DictConfigWrap(config={"a": 1})
    kwargs = dict(
        trainer_config=wrapped, server_manager=object(), tokenizer=None, hf_model_type="qwen2", dataset_cls=Recorder
    )
    by_hydra = module.hydra.utils.instantiate(config=config, **kwargs)
    compat.build_registered_agent_loops_directly()
    compat.build_registered_agent_loops_directly()  # idempotent
    assert isinstance(module.hydra, compat._Facade) and not isinstance(module.hydra._module, compat._Facade)
    direct = module.hydra.utils.instantiate(config=config, **kwargs)
    assert type(direct) is type(by_hydra) is Recorder
    assert direct.kwargs.keys() == by_hydra.kwargs.keys()
    for key, value in by_hydra.kwargs.items():
        assert direct.kwargs[key] is value or direct.kwargs[key] == value, key
    # anything but a plain {"_target_"} dict still goes through Hydra
    from omegaconf import OmegaConf

    with_more = OmegaConf.create({"_target_": f"{__name__}.Recorder", "extra": 3})
    assert module.hydra.utils.instantiate(config=with_more, **kwargs).kwargs["extra"] == 3


def test_verl_builds_agent_loops_the_way_the_shortcut_assumes():
    module = importlib.import_module(compat.AGENT_LOOP_MODULE)
    source = inspect.getsource(module.AgentLoopWorker._run_agent_loop)
    assert "hydra.utils.instantiate(" in source and "_agent_loop_registry[agent_name]" in source, (
        "assumption: AgentLoopWorker._run_agent_loop builds each agent loop with hydra.utils.instantiate "
        "on _agent_loop_registry[agent_name]"
    )
    entry = module._agent_loop_registry["single_turn_agent"]
    assert type(entry) is dict and set(entry) == {"_target_"}, (
        "assumption: verl's @register stores a plain {'_target_': fqdn} dict"
    )


def test_verl_agent_loop_classes_have_what_the_manager_overrides():
    Manager, Worker, Client, RewardWorker = compat.agent_loop_classes()
    worker_class = Worker.__ray_actor_class__
    base = importlib.import_module(compat.AGENT_LOOP_MODULE).AgentLoopWorker
    assert issubclass(worker_class, base)
    assert list(inspect.signature(base.__init__).parameters)[1:5] == [
        "config",
        "llm_client",
        "teacher_client",
        "reward_loop_worker_handles",
    ], "assumption: AgentLoopWorker(config, llm_client, teacher_client, reward_loop_worker_handles)"
    assert "compute_score.remote(" in inspect.getsource(worker_class._compute_score), (
        "assumption: the agent loop awaits handle.compute_score.remote(data) on a reward handle"
    )
    assert "agent_loop_workers_class" in inspect.getsource(Manager.__init__), (
        "assumption: the manager builds its workers from self.agent_loop_workers_class"
    )
    for name in ("_acquire_server", "_release_server"):
        assert name in inspect.getsource(Client.generate), f"assumption: LLMServerClient.generate routes through {name}"
    assert inspect.iscoroutinefunction(RewardWorker.compute_score)
