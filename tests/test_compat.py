"""The verl internals maspo-verl relies on (maspo_verl/compat.py lists them), checked against the
installed verl. Each assertion names the assumption it checks, so bumping verl to a release
that moved one of them fails here, by name, before anything runs.

(The hook around verl's ppo_loss is checked in tests/test_shaping.py.)
"""

import ast
import inspect
import textwrap
from pathlib import Path

import pytest
import verl

from maspo_verl.rollout.hf_replica import HFReplica
from maspo_verl.rollout.hf_server import HFRolloutServer

VERL = Path(verl.__file__).parent
# where verl calls methods on a rollout server actor (vLLM's, SGLang's, ours)
SERVER_CALLERS = ["workers/rollout/replica.py", "workers/rollout/llm_server.py"]


def remote_server_calls(path: Path):
    """(method, number of positional args, keyword names, passes **kwargs) of every
    `<...server...>.<method>.remote(...)` call in a verl source file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "remote"):
            continue
        method = node.func.value
        if not isinstance(method, ast.Attribute) or "server" not in ast.unparse(method.value).lower():
            continue
        keywords = [k.arg for k in node.keywords if k.arg is not None]
        yield method.attr, len(node.args), keywords, any(k.arg is None for k in node.keywords)


def test_verl_still_calls_servers_where_we_look():
    calls = [call for caller in SERVER_CALLERS for call in remote_server_calls(VERL / caller)]
    assert {"generate", "wake_up", "sleep", "abort_all_requests"} <= {name for name, *_ in calls}, (
        "assumption: verl drives rollout servers through .remote() calls in " + ", ".join(SERVER_CALLERS)
    )


@pytest.mark.parametrize("caller", SERVER_CALLERS)
def test_the_hf_server_answers_every_call_verl_makes_on_a_rollout_server(caller):
    for method, n_positional, keywords, var_keyword in remote_server_calls(VERL / caller):
        ours = getattr(HFRolloutServer, method, None)
        assert ours is not None, (
            f"assumption broken: verl ({caller}) calls server.{method}(), HFRolloutServer has no {method}"
        )
        signature = inspect.signature(ours)
        try:
            signature.bind(None, *[None] * n_positional, **dict.fromkeys(keywords))
        except TypeError as exc:
            pytest.fail(
                f"assumption broken: verl ({caller}) calls server.{method}({n_positional} positional, "
                f"keywords {keywords}), HFRolloutServer.{method}{signature} cannot take it: {exc}"
            )
        if var_keyword:
            assert any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()), (
                f"assumption broken: verl ({caller}) passes **kwargs to server.{method}; ours takes none"
            )


def attributes(cls, store: bool) -> set[str]:
    """Names of `self.<name>` that the class's own source stores (or reads)."""
    wanted = ast.Store if store else ast.Load
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, wanted)
        and isinstance(node.value, ast.Name) and node.value.id == "self"
    }  # fmt: skip


def test_the_replica_attributes_we_read_are_set_by_verls_rollout_replica():
    from verl.workers.rollout.replica import RolloutReplica

    methods = {name for name, _ in inspect.getmembers(HFReplica, callable)}
    read = attributes(HFReplica, store=False) - attributes(HFReplica, store=True) - methods
    provided = attributes(RolloutReplica, store=True) | {name for name, _ in inspect.getmembers(RolloutReplica)}
    missing = sorted(read - provided)
    assert not missing, f"assumption broken: HFReplica reads {missing}, which verl's RolloutReplica no longer sets"


def test_the_replica_sets_what_verls_rollout_replica_reads_after_launch():
    from verl.workers.rollout.replica import RolloutReplica

    ours = attributes(HFReplica, store=True)
    for name in ("servers", "_server_handle", "_server_address"):
        assert name in attributes(RolloutReplica, store=False) | attributes(RolloutReplica, store=True), (
            f"assumption broken: verl's RolloutReplica no longer uses self.{name}"
        )
        assert name in ours, f"HFReplica.launch_servers must set self.{name}"


def test_rollout_registries_have_the_shape_we_write_into():
    from maspo_verl import compat

    registry = compat.rollout_adapter_registry()
    assert all(isinstance(key, tuple) and len(key) == 2 for key in registry), (
        f"assumption broken: {compat.ROLLOUT_ADAPTER_REGISTRY} is keyed by (name, mode)"
    )
    assert compat.replica_loader("hf") is not None, "assumption broken: RolloutReplicaRegistry stores our loader"


def test_the_cpu_platform_implements_verls_platform_base():
    from verl.plugin.platform import PlatformBase

    from maspo_verl.cpu_platform import register_cpu_platform

    cls = register_cpu_platform()
    abstract = sorted(getattr(PlatformBase, "__abstractmethods__", ()))
    missing = [name for name in abstract if name in getattr(cls, "__abstractmethods__", ())]
    assert not missing, f"assumption broken: verl's PlatformBase now also requires {missing}"
    cls()  # instantiable


def test_the_fsdp_engine_lookup_still_honours_verl_engine_device():
    source = (VERL / "workers/engine/base.py").read_text()
    assert 'os.getenv("VERL_ENGINE_DEVICE")' in source, (
        "assumption broken: verl's engine registry no longer reads VERL_ENGINE_DEVICE (the CPU platform sets it to "
        "'cuda' so that the FSDP engine, registered for cuda/npu only, is found)"
    )


def test_the_kits_replay_buffer_keywords_are_verls():
    from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

    accepted = set(inspect.signature(ReplayBuffer.__init__).parameters)
    passed = {"sampler_kwargs", "poll_interval", "filter_groups_metric", "train_batch_size", "gen_batch_size",
              "max_inflight_gen_batches"}  # fmt: skip
    assert passed <= accepted, f"assumption broken: verl's ReplayBuffer no longer takes {sorted(passed - accepted)}"


def test_the_v1_trainer_still_builds_a_custom_sampler_with_sampler_kwargs():
    source = (VERL / "trainer/ppo/v1/trainer_base.py").read_text()
    assert "custom_sampler" in source and "sampler_kwargs=sampler_config.sampler_kwargs" in source, (
        "assumption broken: the v1 trainer selects trainer.v1.sampler.custom_sampler and hands it "
        "trainer.v1.sampler.sampler_kwargs (the kit's quick-poll buffer and DAPO's filtering rely on it)"
    )


def test_transfer_queue_storage_units_are_still_a_setting():
    from verl_config import compose_stock

    config = compose_stock()
    assert "num_data_storage_units" in config.transfer_queue.backend.SimpleStorage, (
        "assumption broken: transfer_queue.backend.SimpleStorage.num_data_storage_units (the kit sets it to 1)"
    )


def test_verls_plugin_entry_point_group_is_still_loaded_on_import():
    source = (VERL / "__init__.py").read_text()
    assert "verl.plugins" in source, "assumption broken: `import verl` no longer loads the `verl.plugins` entry points"
