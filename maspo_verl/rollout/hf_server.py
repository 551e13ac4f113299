"""The Ray server actor of the ``hf`` rollout: token-in/token-out generation with transformers.

verl's agent loop talks to a rollout *server* through a Ray actor handle
(``server.generate.remote(prompt_ids=..., sampling_params=..., request_id=...)``) and the
trainer drives it with a few control methods (sleep/wake_up, kv-cache and abort hooks).
vLLM and SGLang implement that contract with an inference engine; this one calls
``model.generate`` on a plain Hugging Face model, which is slow but needs nothing beyond
torch and runs on CPU. It is meant for small models, debugging and tests.

Concurrent requests are micro-batched: requests are queued, grouped by sampling parameters,
left-padded and generated together. verl's agent loop prepares and sends a rollout's requests one
by one, a few milliseconds apart, and one ``model.generate`` call costs about the same for one
row as for sixty-four (its cost is the per-token loop, not the rows), so the server keeps
gathering while requests keep coming: it starts a batch once ``gather_ms`` pass with no new
request, or ``max_gather_ms`` after the batch's first request, or when ``max_num_seqs`` are in.
Both are set under ``rollout.engine_kwargs.hf`` (defaults ``GATHER_MS`` and ``MAX_GATHER_MS``).
Which requests share a batch does not change what each one samples from: every row is sampled
from its own prompt's distribution.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from maspo_verl.padding import left_pad

logger = logging.getLogger(__name__)

# rollout.engine_kwargs.hf defaults (milliseconds): see the module docstring
GATHER_MS = 15.0
MAX_GATHER_MS = 500.0


@dataclass(frozen=True)
class GenParams:
    """The sampling parameters one ``model.generate`` call can share (a batch key)."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    logprobs: bool = False
    ignore_eos: bool = False

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


@dataclass
class _Request:
    prompt_ids: list[int]
    params: GenParams
    future: asyncio.Future = field(repr=False)


def resolve_gen_params(sampling_params: dict[str, Any], prompt_len: int, config) -> GenParams:
    """Translate verl's vLLM-style sampling params into ``GenParams``.

    Mirrors the vLLM server: ``max_tokens`` (or ``max_new_tokens``) wins, else the response
    length, capped so prompt + response fits ``prompt_length + response_length``;
    ``temperature == 0`` means greedy; ``top_k == -1`` means no top-k.
    """
    params = dict(sampling_params)
    budget = config.prompt_length + config.response_length - prompt_len
    max_new = params.pop("max_tokens", params.pop("max_new_tokens", None))
    if max_new is None:
        max_new = min(config.response_length, budget)
    max_new = max(1, int(max_new))
    top_k = int(params.get("top_k", -1) or -1)
    return GenParams(
        max_new_tokens=max_new,
        temperature=float(params.get("temperature", 1.0)),
        top_p=float(params.get("top_p", 1.0)),
        top_k=max(top_k, 0),
        repetition_penalty=float(params.get("repetition_penalty", config.repetition_penalty) or 1.0),
        logprobs=bool(params.get("logprobs", False)),
        ignore_eos=bool(params.get("ignore_eos", config.ignore_eos)),
    )


class SamplingRNG:
    """The server's own random stream, seeded like vLLM's engine (``rollout.seed`` + the replica's
    rank): a run's sampling is reproducible from its seed and batches, two seeds sample
    independently, and the process's global generator is left as it was. ``model.generate`` draws
    from torch's global generator, so each call runs inside a fork of it set to this stream."""

    def __init__(self, seed: int, device: torch.device):
        self.devices = [device] if device.type == "cuda" else []
        self.cpu_state = torch.Generator().manual_seed(seed).get_state()
        self.device_states = [torch.Generator(device=d).manual_seed(seed).get_state() for d in self.devices]
        self._fork = None

    def __enter__(self):
        self._fork = torch.random.fork_rng(devices=self.devices)
        self._fork.__enter__()
        torch.set_rng_state(self.cpu_state)
        for device, state in zip(self.devices, self.device_states):
            torch.cuda.set_rng_state(state, device)
        return self

    def __exit__(self, *exc):
        self.cpu_state = torch.get_rng_state()
        self.device_states = [torch.cuda.get_rng_state(device) for device in self.devices]
        return self._fork.__exit__(*exc)


def gather_window(engine_kwargs) -> tuple[float, float]:
    """(gather, max gather) in seconds from ``rollout.engine_kwargs.hf``; a bad value names its key."""
    settings = dict((engine_kwargs or {}).get("hf") or {})
    unknown = set(settings) - {"gather_ms", "max_gather_ms"}
    if unknown:
        raise ValueError(
            f"Unknown setting(s) actor_rollout_ref.rollout.engine_kwargs.hf.{sorted(unknown)[0]} for the hf rollout; "
            "it reads gather_ms and max_gather_ms"
        )
    values = []
    for key, default in (("gather_ms", GATHER_MS), ("max_gather_ms", MAX_GATHER_MS)):
        value = settings.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
            raise ValueError(
                f"hf rollout setting actor_rollout_ref.rollout.engine_kwargs.hf.{key}={value!r} is not allowed: "
                "it must be a finite number of milliseconds >= 0"
            )
        values.append(value / 1000.0)
    return values[0], values[1]


def _dtype(name: str) -> torch.dtype:
    from verl.utils.torch_dtypes import PrecisionType

    return PrecisionType.to_dtype(name)


class HFRolloutServer:
    """One rollout replica on one node, serving verl's token-in/token-out protocol.

    Args mirror ``vLLMHttpServer`` so the replica can launch it the same way:
    config (RolloutConfig), model_config (HFModelConfig or its DictConfig), rollout_mode,
    workers, replica_rank, node_rank, gpus_per_node, nnodes, cuda_visible_devices.
    """

    def __init__(
        self,
        config,
        model_config,
        rollout_mode,
        workers: list,
        replica_rank: int,
        node_rank: int,
        gpus_per_node: int,
        nnodes: int,
        cuda_visible_devices: str,
    ):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.utils.device import get_device_name, get_visible_devices_keyword
        from verl.workers.config import HFModelConfig

        # Must happen before CUDA is touched so the server sees its worker's GPU.
        if cuda_visible_devices:
            os.environ[get_visible_devices_keyword()] = cuda_visible_devices
        self.config = omega_conf_to_dataclass(config)
        self.model_config = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.rollout_mode = rollout_mode
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.device = torch.device(get_device_name())
        self.dtype = _dtype(self.config.dtype)
        self.global_steps: Optional[int] = None
        self.model = None
        self._on_device = False
        self._queue: Optional[asyncio.Queue] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._paused = False
        self._resume_event: Optional[asyncio.Event] = None
        self._batch_cap = max(1, int(self.config.max_num_seqs))
        self._gather_s, self._max_gather_s = gather_window(self.config.engine_kwargs)
        self._taken = 0  # requests taken off the queue whose generation has not finished

    # ------------------------------------------------------------------ lifecycle
    async def launch_server(self, **kwargs) -> None:
        """Build the model (random init for ``load_format=dummy``; weights come from the actor)."""
        from transformers import AutoModelForCausalLM

        kw = dict(torch_dtype=self.dtype, trust_remote_code=self.model_config.trust_remote_code)
        kw["attn_implementation"] = self.model_config.override_config.get("attn_implementation", "sdpa")
        if "dummy" in self.config.load_format:
            model = AutoModelForCausalLM.from_config(self.model_config.hf_config, **kw)
        else:
            model = AutoModelForCausalLM.from_pretrained(self.model_config.local_path, **kw)
        self.model = model.eval().to(self.device)
        self._on_device = True
        self._eos_ids = self._find_eos_ids()
        self._pad_id = self._find_pad_id()
        self._rng = SamplingRNG(self.config.seed + self.replica_rank, self.device)
        logger.info("hf rollout server %s ready on %s", self.replica_rank, self.device)

    def get_server_address(self) -> tuple[str, str]:
        """There is no HTTP endpoint; return an id that is unique per replica."""
        import ray

        return ray.util.get_node_ip_address().strip("[]"), f"hf-{self.replica_rank}"

    def _find_eos_ids(self) -> list[int]:
        """EOS ids from generation_config, else hf_config, else the tokenizer."""
        sources = [self.model_config.generation_config, self.model_config.hf_config, self.model_config.tokenizer]
        for src in sources:
            eos = getattr(src, "eos_token_id", None)
            if eos is not None:
                return [eos] if isinstance(eos, int) else list(eos)
        return []

    def _find_pad_id(self) -> int:
        tok = self.model_config.tokenizer
        pad = getattr(tok, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.model_config.hf_config, "pad_token_id", None)
        if pad is None:
            pad = self._eos_ids[0] if self._eos_ids else 0
        return int(pad)

    # ------------------------------------------------------------------ generate
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        **kwargs,
    ):
        """Generate one response; returns verl's ``TokenOutput``."""
        from verl.workers.rollout.replica import TokenOutput

        if image_data is not None or video_data is not None:
            raise NotImplementedError("the hf rollout serves text-only models")
        self._ensure_loop()
        while self._paused:
            await self._resume_event.wait()
        prompt_ids = [int(t) for t in prompt_ids]
        params = resolve_gen_params(sampling_params, len(prompt_ids), self.config)
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(prompt_ids, params, future))
        token_ids, log_probs = await future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _ensure_loop(self) -> None:
        """Start the batching task on the running event loop (again if the loop changed,
        which only happens when the server is driven in-process, e.g. by tests)."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:
            self._loop = loop
            self._queue = asyncio.Queue()
            self._resume_event = asyncio.Event()
            self._resume_event.set()
            self._batch_task = loop.create_task(self._batch_loop())

    async def _batch_loop(self) -> None:
        """Gather requests while they keep coming, group by sampling params, generate group by group."""
        loop = asyncio.get_running_loop()
        while True:
            requests = [await self._queue.get()]
            self._taken += 1
            deadline = loop.time() + self._max_gather_s
            while len(requests) < self._batch_cap:
                if self._queue.empty():
                    wait = min(self._gather_s, deadline - loop.time())
                    if wait <= 0:
                        break
                    await asyncio.sleep(wait)
                    if self._queue.empty():
                        break  # a quiet interval: the burst is over
                requests.append(self._queue.get_nowait())
                self._taken += 1
            groups: dict[GenParams, list[_Request]] = {}
            for req in requests:
                groups.setdefault(req.params, []).append(req)
            for params, group in groups.items():
                try:
                    await self._run_group(params, group)
                finally:
                    self._taken -= len(group)

    async def _run_group(self, params: GenParams, group: list[_Request]) -> None:
        try:
            results = await asyncio.to_thread(self._generate_batch, [r.prompt_ids for r in group], params)
        except Exception as exc:  # hand the error to every waiting request
            logger.exception("hf rollout generation failed")
            for req in group:
                if not req.future.done():
                    req.future.set_exception(exc)
            return
        for req, result in zip(group, results, strict=True):
            if not req.future.done():
                req.future.set_result(result)

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], params: GenParams):
        """Left-pad, call ``model.generate``, cut each row at its first EOS (kept, like vLLM)."""
        from transformers import GenerationConfig

        input_ids, attention_mask = left_pad(prompts, self._pad_id)
        width = input_ids.shape[1]
        # Every knob explicit (top_k=0 disables top-k), so the checkpoint's generation_config
        # defaults cannot leak in; sampling knobs only when sampling, as transformers wants.
        sampling = dict(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
        gen_config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            min_new_tokens=params.max_new_tokens if params.ignore_eos else 0,
            do_sample=params.do_sample,
            **(sampling if params.do_sample else {}),
            repetition_penalty=params.repetition_penalty,
            eos_token_id=self._eos_ids or None,
            pad_token_id=self._pad_id,
            return_dict_in_generate=True,
            output_scores=params.logprobs,
        )
        with self._rng:
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=gen_config,
            )
        new_tokens = out.sequences[:, width:].cpu()
        logps = self._token_logprobs(out.scores, new_tokens) if params.logprobs else None
        return [self._trim(new_tokens[i], None if logps is None else logps[i]) for i in range(len(prompts))]

    @staticmethod
    def _token_logprobs(scores: tuple[torch.Tensor, ...], tokens: torch.Tensor) -> torch.Tensor:
        """Log-prob of each chosen token under the processed (temperature/top-k/top-p) logits.

        This is vLLM's default ``logprobs_mode=processed_logprobs``.
        """
        steps = torch.stack([s.float().cpu() for s in scores], dim=1)  # (batch, steps, vocab)
        logp = torch.log_softmax(steps, dim=-1)
        return logp.gather(-1, tokens[:, : steps.shape[1]].unsqueeze(-1)).squeeze(-1)

    def _trim(self, tokens: torch.Tensor, logps: Optional[torch.Tensor]):
        ids = tokens.tolist()
        end = len(ids)
        for i, t in enumerate(ids):
            if t in self._eos_ids:
                end = i + 1
                break
        return ids[:end], None if logps is None else logps[:end].tolist()

    # ------------------------------------------------------------------ weights
    async def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]], global_steps=None) -> int:
        """Copy a bucket of actor weights (HF names, any dtype/device) into the model."""
        # state_dict keeps every alias of a tied weight (e.g. lm_head.weight), named_parameters does not.
        params = self.model.state_dict(keep_vars=True)
        loaded = 0
        with torch.no_grad():
            for name, tensor in named_tensors:
                target = params.get(name)
                if target is None:
                    logger.warning("hf rollout: no parameter named %s, skipped", name)
                    continue
                target.copy_(tensor.to(device=target.device, dtype=target.dtype))
                loaded += 1
        if global_steps is not None:
            self.global_steps = global_steps
        return loaded

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # ------------------------------------------------------------------ control
    async def wake_up(self, tags: Optional[list[str]] = None) -> None:
        """Bring weights back onto the accelerator (no-op on CPU or when already there)."""
        if not self._on_device and self.model is not None:
            self.model.to(self.device)
            self._on_device = True

    async def sleep(self) -> None:
        """Free accelerator memory for training by parking the weights on the host.

        Only in hybrid mode with ``free_cache_engine``; on CPU there is nothing to free.
        """
        if self.device.type == "cpu" or not self.config.free_cache_engine or self.model is None:
            return
        from verl.utils.device import get_torch_device

        self.model.to("cpu")
        self._on_device = False
        get_torch_device().empty_cache()

    async def clear_kv_cache(self) -> None:
        """HF generate keeps no cache between calls."""

    async def release_kv_cache(self) -> None:
        """Nothing persistent to release (see ``clear_kv_cache``)."""

    async def resume_kv_cache(self) -> None:
        """Counterpart of ``release_kv_cache``."""

    async def wait_for_requests_to_drain(self) -> None:
        """Return once nothing is queued and no batch is being generated."""
        while self._queue is not None and (not self._queue.empty() or self._taken):
            await asyncio.sleep(0.01)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Hold new requests until ``resume_generation``; running batches finish (they are short)."""
        self._ensure_loop()
        self._paused = True
        self._resume_event.clear()
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        self._ensure_loop()
        self._paused = False
        self._resume_event.set()

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id, "error": "hf rollout cannot abort a request"}

    async def start_profile(self, **kwargs) -> None:
        """Profiling is not supported by the hf rollout."""

    async def stop_profile(self) -> None:
        """Profiling is not supported by the hf rollout."""
