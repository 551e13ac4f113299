"""Generation through verl's own rollout replicas, standalone, one per device group.

The trainer generates through ``RolloutReplica`` objects looked up by ``rollout.name`` in
``RolloutReplicaRegistry`` and talks to each replica's server actor with the token-in /
token-out call ``server.generate.remote(prompt_ids=..., sampling_params=..., request_id=...)``.
The evaluator does the same with replicas started by ``init_standalone()`` (verl's own mode for
a rollout that owns its devices, as ``verl.trainer.main_generation_server`` uses), so ``vllm``
(GPU users) and ``hf`` (small models, CPU, tests) differ only by ``rollout.name``. Data
parallelism: one replica per ``tensor_parallel_size`` devices; problems are spread over the
replicas (all samples of a problem on one replica, which lets vLLM reuse its prompt cache).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any

from maspo_verl.eval.data import EvalInputError

BACKENDS = ("hf", "vllm")
_POOLS_STARTED = 0  # distinct actor / resource-pool names when one Ray cluster serves several evaluations


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover
        return 0


def engine_version(backend: str) -> str:
    """The rollout engine's own version: vLLM's, or transformers' and torch's for our hf engine."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("vllm",) if backend == "vllm" else ("transformers", "torch")
    try:
        return " / ".join(f"{name} {version(name)}" for name in names)
    except PackageNotFoundError as exc:
        raise EvalInputError(f"the {backend} backend needs {exc.name}, which is not installed") from exc


def check_backend(backend: str, tensor_parallel_size: int, num_replicas: int | None) -> int:
    """Validate the backend choice before anything is loaded; return the number of replicas."""
    if backend not in BACKENDS:
        raise EvalInputError(f"--backend must be one of {BACKENDS}, got {backend!r}")
    if tensor_parallel_size < 1:
        raise EvalInputError(f"--tensor-parallel-size must be >= 1, got {tensor_parallel_size}")
    gpus = cuda_device_count()
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise EvalInputError(
                "the vllm backend needs vLLM, which is not installed: `pip install 'maspo-verl[vllm]'` "
                "(verl's vllm extra) on a CUDA machine, or use --backend hf for small models"
            )
        if gpus == 0:
            raise EvalInputError("the vllm backend needs a CUDA GPU; none is visible (use --backend hf on CPU)")
    if backend == "hf" and tensor_parallel_size != 1:
        raise EvalInputError("the hf backend runs one model copy per replica: --tensor-parallel-size must be 1")
    if num_replicas is None:
        num_replicas = max(1, gpus // tensor_parallel_size) if gpus else 1
    if num_replicas < 1:
        raise EvalInputError(f"--num-replicas must be >= 1, got {num_replicas}")
    if gpus and num_replicas * tensor_parallel_size > gpus:
        raise EvalInputError(
            f"{num_replicas} replicas x tensor parallel {tensor_parallel_size} need "
            f"{num_replicas * tensor_parallel_size} GPUs; {gpus} visible"
        )
    return num_replicas


@dataclass
class EngineSettings:
    backend: str
    model_dir: str
    prompt_length: int
    response_length: int
    dtype: str
    num_replicas: int = 1
    tensor_parallel_size: int = 1
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.85
    rollout_overrides: dict = field(default_factory=dict)
    ray_address: str | None = None


class ReplicaPool:
    """verl rollout replicas of one backend, started standalone, with a bounded request queue each."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self.replicas: list = []
        self._semaphores: list[asyncio.Semaphore] = []
        self._started_ray = False

    def _rollout_config(self):
        from verl.workers.config import RolloutConfig

        s = self.settings
        kwargs: dict[str, Any] = dict(
            name=s.backend,
            mode="async",
            prompt_length=s.prompt_length,
            response_length=s.response_length,
            max_model_len=s.prompt_length + s.response_length,
            dtype=s.dtype,
            tensor_model_parallel_size=s.tensor_parallel_size,
            max_num_seqs=s.max_num_seqs,
            load_format="auto",  # real weights: there is no trainer to send them
            free_cache_engine=False,
            calculate_log_probs=False,
            gpu_memory_utilization=s.gpu_memory_utilization,
            standalone_gpu_memory_utilization=s.gpu_memory_utilization,
            max_num_batched_tokens=max(8192, s.prompt_length + s.response_length),
        )
        kwargs.update(s.rollout_overrides)
        return RolloutConfig(**kwargs)

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        env = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN"}
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": bool(os.environ.get("MASPO_EVAL_RAY_LOGS")),
        }
        if self.settings.ray_address:
            kwargs["address"] = self.settings.ray_address
        elif cuda_device_count() == 0:
            # verl's CPU platform (maspo_verl.cpu_platform): resource pools want GPU slots; Ray's
            # logical GPUs are not checked against hardware.
            from maspo_verl.cpu_platform import cpu_trainer_env

            for key, value in cpu_trainer_env().items():
                os.environ.setdefault(key, value)
                env.setdefault(key, value)
            kwargs.update(num_cpus=max(4, os.cpu_count() or 1), num_gpus=self.settings.num_replicas)
        ray.init(runtime_env={"env_vars": env}, **kwargs)
        self._started_ray = True

    async def start(self) -> None:
        import maspo_verl

        self._start_ray()
        maspo_verl.register()
        from verl.workers.config import HFModelConfig
        from verl.workers.rollout.replica import get_rollout_replica_class

        config = self._rollout_config()
        model_config = HFModelConfig(path=self.settings.model_dir)
        replica_class = get_rollout_replica_class(self.settings.backend)
        gpus_per_node = max(cuda_device_count(), self.settings.tensor_parallel_size)
        global _POOLS_STARTED
        _POOLS_STARTED += 1
        suffix = f"eval{os.getpid()}x{_POOLS_STARTED}"
        self.replicas = [
            replica_class(
                replica_rank=rank,
                config=config,
                model_config=model_config,
                gpus_per_node=gpus_per_node,
                name_suffix=suffix,
            )  # fmt: skip
            for rank in range(self.settings.num_replicas)
        ]
        await asyncio.gather(*[replica.init_standalone() for replica in self.replicas])
        self._semaphores = [asyncio.Semaphore(self.settings.max_num_seqs) for _ in self.replicas]

    async def generate(self, replica: int, prompt_ids: list[int], sampling_params: dict, request_id: str):
        """One response from one replica: verl's ``TokenOutput`` (token_ids, stop_reason, ...)."""
        async with self._semaphores[replica]:
            handle = self.replicas[replica].server_handle
            return await handle.generate.remote(
                prompt_ids=prompt_ids, sampling_params=dict(sampling_params), request_id=request_id
            )

    def shutdown(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        if self._started_ray:
            ray.shutdown()
            return
        from ray.util.placement_group import remove_placement_group

        for replica in self.replicas:
            for actor in list(replica.servers) + list(replica.workers):
                try:
                    ray.kill(actor)
                except Exception:
                    pass
            for pg in getattr(replica.resource_pool, "pgs", None) or []:
                try:
                    remove_placement_group(pg)
                except Exception:
                    pass
        self.replicas = []
