"""The ``cpu`` verl platform: registration, what verl reads from it, and verl's gloo init."""

import os
import subprocess
import sys

import pytest
import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry
from verl.plugin.platform import platform_manager as pm

from maspo_verl.cpu_platform import register_cpu_platform


@pytest.fixture
def cpu_platform(monkeypatch):
    """verl's platform singleton set to ours for one test, then restored."""
    cls = register_cpu_platform()
    monkeypatch.setattr(pm, "_current_platform", cls())
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    return pm._current_platform


def test_registration_is_idempotent_and_explicit_only():
    cls = register_cpu_platform()
    assert register_cpu_platform() is cls
    assert PlatformRegistry.get("cpu") is cls and issubclass(cls, PlatformBase)
    # never auto-detected: a real accelerator keeps winning
    assert cls().is_platform_available(use_smi_check=True) is False


def test_registration_keeps_a_foreign_cpu_platform(monkeypatch):
    class Theirs(PlatformBase):  # abstract methods are irrelevant here; never instantiated
        pass

    monkeypatch.setattr(PlatformRegistry, "_platforms", {**PlatformRegistry._platforms, "cpu": Theirs})
    assert register_cpu_platform() is Theirs


def test_what_verl_reads_from_the_platform(cpu_platform):
    from verl.utils import device

    assert device.get_device_name() == "cpu"
    assert device.get_nccl_backend() == "gloo"
    assert device.get_resource_name() == "GPU"  # logical Ray slots, see module docstring
    # verl passes the "device id" to tensor.to(); an int would mean cuda:<int>
    assert torch.ones(1).to(device.get_device_id()).device.type == "cpu"
    mod = device.get_torch_device()
    mod.empty_cache(), mod.synchronize(), mod.set_device(0)
    assert mod.is_available() is False and mod.memory_allocated() == 0
    assert mod.mem_get_info()[1] > 0
    assert torch.equal(mod.get_rng_state(), torch.get_rng_state())
    assert cpu_platform.ray_resource_options(0.5) == {"num_gpus": 0.5}
    with cpu_platform.nvtx_range("noop"):
        cpu_platform.profiler_start(), cpu_platform.profiler_stop()


def test_the_kit_preset_holds_the_cpu_essentials():
    from verl_config import compose_ours

    config = compose_ours("+kit=tiny_cpu", resolve=False)
    assert config.trainer.device == "cpu"
    assert config.ray_kwargs.ray_init.num_gpus == 1 and config.ray_kwargs.ray_init.num_cpus >= 16
    assert config.actor_rollout_ref.actor.strategy == "fsdp2"
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert config.actor_rollout_ref.rollout.name == "hf"


INIT_CODE = """
import os, socket
os.environ.update(VERL_PLATFORM="cpu", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); os.environ["MASTER_PORT"] = str(s.getsockname()[1])
from maspo_verl.cpu_platform import register_cpu_platform
register_cpu_platform()
import torch, torch.distributed as dist
from verl.utils import distributed
distributed.{initialiser}()
distributed.initialize_global_process_group_ray()  # the Ray one skips an existing group
assert dist.get_backend() == "cpu:gloo", dist.get_backend()
t = torch.ones(2); dist.all_reduce(t); assert t.tolist() == [1.0, 1.0]
dist.destroy_process_group(); print("OK")
"""


@pytest.mark.parametrize("initialiser", ["initialize_global_process_group", "initialize_global_process_group_ray"])
def test_both_of_verls_initialisers_make_a_gloo_group_on_cpu(initialiser):
    """verl builds the backend "cpu:gloo,cpu:gloo" (rejected by torch as it stands); the
    non-Ray initialiser (verl's SFT trainer) calls init_process_group unconditionally, so the
    platform must not create the group behind its back. Fresh process: no leftovers."""
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none")
    code = INIT_CODE.replace("{initialiser}", initialiser)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_a_conflicting_repeat_still_reaches_torch():
    from maspo_verl.cpu_platform import _without_repeats

    assert _without_repeats("cpu:gloo,cpu:gloo") == "cpu:gloo"
    assert _without_repeats("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"
    assert _without_repeats("cpu:gloo,cpu:mpi") == "cpu:gloo,cpu:mpi"
