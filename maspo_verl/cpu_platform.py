"""A CPU platform for stock verl 0.9.x, so the real trainer can run without an accelerator.

verl resolves its hardware backend once per process through
``verl.plugin.platform.get_platform()``; 0.9.x ships ``nvidia``, ``huawei`` (npu) and ``amd``
but no CPU backend, and falls back to ``nvidia`` (NCCL, ``torch.cuda``) on a CPU-only host.
``register_cpu_platform()`` adds ``PlatformCPU`` to verl's ``PlatformRegistry`` under the
name ``cpu``; it is selected with ``VERL_PLATFORM=cpu`` (never auto-detected, so it cannot
shadow a real accelerator).

What a full ``python -m verl.trainer.main_ppo`` run on CPU needs besides this class
(all set by the ``+kit=tiny_cpu`` preset, configs/kit/tiny_cpu.yaml):

* Ray must advertise accelerator slots. verl's resource pools put ``{ray_resource_name(): 1}``
  in every placement-group bundle and ``ResourcePoolManager`` refuses to start unless the
  nodes report ``GPU`` (or ``NPU``) resources. The CPU platform therefore names Ray's *logical*
  ``GPU`` resource, and the run declares as many as it wants CPU "devices" with
  ``+ray_kwargs.ray_init.num_gpus=N`` (Ray does not check logical GPUs against hardware).
* ``ray_kwargs.ray_init.num_cpus=16``: TransferQueue asks for ~9 logical CPUs (with its
  default 8 storage units; ``num_data_storage_units=1`` makes start-up much faster).
* The FSDP engines are registered for ``cuda``/``npu`` only; the platform sets
  ``VERL_ENGINE_DEVICE=cuda`` (if unset) so the engine lookup finds them. The engine itself
  then uses ``get_device_name()`` == ``cpu`` for its tensors and meshes.
* ``actor.strategy=fsdp2`` (FSDP1 fails on CPU) and ``attn_implementation=sdpa``.

Two or more data-parallel ranks (``+kit=tiny_cpu_dp2``) need nothing else from the platform:
every rank is its own Ray actor holding one logical ``GPU`` slot, all of them join one gloo
group, FSDP2 shards the model over it, and the ``hf`` rollout starts one replica per rank.
The platform does make one thing work that verl's reference worker needs on any number of
ranks: see ``_never_pin_fsdp2_offload``.
"""

from __future__ import annotations

import functools
import logging
import os
import types
from contextlib import contextmanager
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)

PLATFORM_NAME = "cpu"


class _CPUDeviceModule(types.ModuleType):
    """Stand-in for ``torch.cuda`` that verl calls through ``get_torch_device()``.

    ``torch.cpu`` lacks the memory and RNG helpers verl calls unconditionally
    (``empty_cache``, ``mem_get_info``, ``memory_allocated``, ``get_rng_state``...), so we
    answer those with harmless values and delegate everything else to ``torch.cpu``.
    """

    def __init__(self):
        super().__init__("maspo_verl_cpu_device")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(torch.cpu, name)

    # --- device -----------------------------------------------------------------
    @staticmethod
    def is_available() -> bool:
        # "No separate accelerator": verl then skips device-memory logging and RNG-state
        # bookkeeping, which have no meaning for host RAM.
        return False

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "cpu"

    @staticmethod
    def synchronize(device: Any = None) -> None:
        return None

    # --- memory (host RAM is not a managed device pool) ---------------------------
    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return vm.available, vm.total

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        return None

    @staticmethod
    def reset_accumulated_memory_stats(device: Any = None) -> None:
        return None

    # --- RNG: the CPU generator is torch's default generator ----------------------
    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)


_DEVICE_MODULE = _CPUDeviceModule()


def _accept_the_backend_string_verl_builds() -> None:
    """Let ``torch.distributed.init_process_group`` take the backend string verl builds here.

    verl's initialisers (``verl.utils.distributed.initialize_global_process_group`` and its
    ``_ray`` twin, the SFT trainer's and the workers') pass ``f"cpu:gloo,{device}:{backend}"``,
    which on this platform reads ``"cpu:gloo,cpu:gloo"``; torch rejects a device type named
    twice. The wrapper drops exact repeats of a ``device:backend`` entry (a repeat that names
    another backend still reaches torch and fails there), so both initialisers, and verl's
    model merger, work unchanged. torch's own function is wrapped once, in processes that
    selected this platform; every other call goes through untouched.
    """
    import torch.distributed as dist

    if not dist.is_available() or getattr(dist.init_process_group, "_maspo_verl", False):
        return
    original = dist.init_process_group

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if args and isinstance(args[0], str):
            args = (_without_repeats(args[0]), *args[1:])
        elif isinstance(kwargs.get("backend"), str):
            kwargs["backend"] = _without_repeats(kwargs["backend"])
        return original(*args, **kwargs)

    init_process_group._maspo_verl = True
    dist.init_process_group = init_process_group


def _without_repeats(backend: str) -> str:
    """ "cpu:gloo,cpu:gloo" -> "cpu:gloo"; anything else unchanged."""
    return ",".join(dict.fromkeys(part.strip() for part in backend.split(",")))


def _never_pin_fsdp2_offload() -> None:
    """Make FSDP2's ``CPUOffloadPolicy`` leave host memory unpinned when nothing can pin it.

    verl's FSDP2 engine wraps every forward-only model (the reference policy of a KL loss)
    with ``CPUOffloadPolicy(pin_memory=True)``, whatever the engine config says. Page-locked
    memory belongs to an accelerator's driver: on a host without one, ``fully_shard`` then
    fails in ``Tensor.pin_memory()`` ("Cannot access accelerator device when none is
    available"), so ``use_kl_loss=True`` could never start on CPU. Here the parameters already
    live in host memory and pinning would buy nothing, so in a process that selected this
    platform on such a host every ``CPUOffloadPolicy`` gets ``pin_memory=False``. verl binds
    the class by name in several modules, so the class itself is adjusted (once, idempotent);
    with an accelerator present nothing changes.
    """
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and accelerator.is_available():
        return
    try:
        from torch.distributed.fsdp import CPUOffloadPolicy
    except ImportError:  # pragma: no cover - torch without FSDP2
        return
    if getattr(CPUOffloadPolicy, "_maspo_verl_never_pinned", False):
        return
    original_init = CPUOffloadPolicy.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.pin_memory = False

    CPUOffloadPolicy.__init__ = __init__
    CPUOffloadPolicy._maspo_verl_never_pinned = True


def _platform_class():
    """Build ``PlatformCPU`` lazily so importing this module never imports verl."""
    from verl.plugin.platform import PlatformBase

    class PlatformCPU(PlatformBase):
        """verl platform for plain CPUs: gloo collectives, no profiler, logical Ray GPUs."""

        def __init__(self):
            # The FSDP engines are registered for cuda/npu only; the lookup honours this
            # override, while tensors and meshes still follow device_name == "cpu".
            os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
            _never_pin_fsdp2_offload()
            _accept_the_backend_string_verl_builds()

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self) -> types.ModuleType:
            return _DEVICE_MODULE

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check: bool = False) -> bool:
            # Only ever chosen explicitly (VERL_PLATFORM=cpu): auto-detection must keep
            # picking a real accelerator when there is one.
            return False

        def current_device(self) -> str:
            # Not an index: verl passes this straight to ``tensor.to(...)`` and
            # ``torch.device(...)``, where an int would mean ``cuda:<int>``.
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: Optional[int] = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            # Ray sets this for actors holding (logical) GPUs; verl reads it back.
            return "CUDA_VISIBLE_DEVICES"

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            # verl's placement groups and resource check need an accelerator resource;
            # on CPU these are logical slots declared with ray.init(num_gpus=N).
            return "GPU"

        def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
            return {"num_gpus": num_gpus}

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self) -> Any:
            return None

    return PlatformCPU


def register_cpu_platform():
    """Register ``PlatformCPU`` in verl's platform registry as ``cpu``; return the class.

    Idempotent. Never replaces a ``cpu`` platform that verl (or someone else) registered
    first: that one is kept and returned. Raises if verl's registry cannot be reached,
    because a silent failure would only surface later as an NCCL error.
    """
    try:
        from verl.plugin.platform import PlatformRegistry
    except Exception as exc:  # pragma: no cover - depends on the installed verl
        raise RuntimeError(f"maspo_verl: cannot import verl's PlatformRegistry: {exc!r}") from exc

    existing = PlatformRegistry.get(PLATFORM_NAME)
    if existing is not None:
        if getattr(existing, "_maspo_verl", False) or existing.__module__.startswith("verl."):
            return existing
        logger.warning("maspo_verl: platform %r already registered by %s; keeping it", PLATFORM_NAME, existing)
        return existing
    cls = _platform_class()
    cls._maspo_verl = True
    PlatformRegistry.register(platform=PLATFORM_NAME)(cls)
    if PlatformRegistry.get(PLATFORM_NAME) is not cls:
        raise RuntimeError("maspo_verl: registering the cpu platform in verl failed")
    return cls


# One torch thread per process in a CPU run. verl runs ~8 processes (trainer, actor, rollout server,
# agent loop, TransferQueue, ...); with several threads each, an OpenMP thread waits for a busy
# core at every operation: a kit forward pass beside a busy process took 13 times longer with 2
# threads than with 1 (docs/benchmarks.md), and the results are bitwise equal. TransferQueue's own
# thread count for its copies (default 8, capped at the core count with a warning on every call)
# is set to the same, so it never switches. A value already in the environment is kept.
CPU_RUN_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQ_NUM_THREADS": "1"}


def cpu_trainer_env() -> dict[str, str]:
    """Environment variables for a CPU run (inherited by the local Ray cluster's workers)."""
    return {"VERL_PLATFORM": PLATFORM_NAME, "VERL_ENGINE_DEVICE": "cuda", **CPU_RUN_THREADS}
