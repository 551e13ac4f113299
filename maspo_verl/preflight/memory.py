"""A memory estimate per GPU, before Ray starts: does the run fit the card?

verl 0.9.1 runs the FSDP actor and vLLM on the same GPUs (its hybrid engine). Per GPU, with N
parameters sharded by FSDP over S GPUs (all of the actor's GPUs when
`fsdp_config.fsdp_size=-1`, verl's default, else `fsdp_size`), b bytes per stored parameter
(`fsdp_config.model_dtype`, fp32 by default: the bf16 compute copy lives only per layer), a card
of C GiB and K = 2 GiB for the CUDA contexts of the trainer and vLLM processes, NCCL's buffers
and vLLM's CUDA graphs:

* vLLM holds `rollout.gpu_memory_utilization` x C (its weights, KV cache and workspace: vLLM
  >= 0.7 sizes its share as that fraction of the card's total memory) while it is awake;
* the actor's parameter shard is b N / S, its gradients b N / S, Adam's two states 2 b N / S;
* rollout, and the end of each weight sync, when vLLM takes its KV cache back
  (engine_workers.update_weights: weights resumed, weights synced, the actor offloaded if
  `param_offload`, then the KV cache resumed): vLLM's share + the parameter shard (unless
  `param_offload`) + Adam (unless `optimizer_offload`) + K. During the sync itself vLLM holds only
  its weights (2 N / tp in bf16) next to the shard and one bucket of gathered tensors
  (`checkpoint_engine.update_weights_bucket_megabytes`); the larger of the two is the sync's peak;
* the update: vLLM asleep (`free_cache_engine`, verl's default; otherwise its share stays), the
  parameter shard, gradients and Adam on the GPU whatever the offload flags (verl loads them for
  the update) + K, and the activations, which this estimate does not count: they grow with
  `actor.ppo_max_token_len_per_gpu` and gradient checkpointing bounds them. FSDP2's
  `offload_policy` keeps all three on the CPU;
* the reference model, when a KL term needs one, is CPU-offloaded by verl's engine in 0.9.1
  (forward_only: CPUOffload / CPUOffloadPolicy) and counts nothing.

Above 90% of the card the run is warned; above 100% it is refused, with the settings that would
bring it under 90%. The card is the size the user names (`--gpu-memory-gb`, GiB of the card's
total memory as its driver reports it: an "80 GB" H100 reports 79.6), else the driver's own GPU
when it has one, else 80. docs/reproducing.md ("Memory") compares the estimate with verl's
published configurations.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

GIB = 2**30
DEFAULT_GPU_MEMORY_GB = 80.0
GPU_MEMORY_ENV = "MASPO_VERL_GPU_MEMORY_GB"
WARN_FRACTION = 0.90
CONTEXTS_GIB = 2.0
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "half": 2}
ACTOR = "actor_rollout_ref.actor.fsdp_config"
ROLLOUT = "actor_rollout_ref.rollout"

# The paper recipes' models, from their config.json on the Hugging Face Hub, so that a dry run
# away from the GPU nodes (no download) can estimate them; a local folder or a cached download
# is read instead. Parameter counts follow from these (tests/test_preflight_memory.py checks them
# against the model cards: 1.78B, 7.62B, 14.8B).
QWEN2 = {"model_type": "qwen2", "max_position_embeddings": 131072, "tie_word_embeddings": False}
KNOWN_MODELS = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": {**QWEN2, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": {**QWEN2, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": {**QWEN2, "hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064},
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model."""

    params: int
    layers: int
    kv_heads: int
    head_dim: int
    source: str  # where the shape came from


@functools.cache
def model_shape(path: str) -> ModelShape | None:
    """The model's shape from its local folder, the Hugging Face cache or KNOWN_MODELS (None if none)."""
    from transformers import AutoConfig

    local = Path(os.path.expanduser(path))
    try:
        hf_config = AutoConfig.from_pretrained(str(local) if local.is_dir() else path, local_files_only=True)
        source = "its config.json"
    except (OSError, ValueError):
        if path not in KNOWN_MODELS:
            return None
        known = dict(KNOWN_MODELS[path])
        hf_config = AutoConfig.for_model(known.pop("model_type"), **known)
        source = "its config.json on the Hub, as recorded in maspo_verl/preflight/memory.py"
    return ModelShape(
        params=count_parameters(hf_config),
        layers=hf_config.num_hidden_layers,
        kv_heads=getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads,
        source=source,
    )


def count_parameters(hf_config) -> int:
    """The model's parameter count, from its architecture built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(parameter.numel() for parameter in model.parameters())


@dataclasses.dataclass(frozen=True)
class Setup:
    """The settings the estimate depends on (one GPU's view)."""

    params: int
    shard: int  # FSDP shard group size
    param_bytes: int  # bytes per stored actor parameter (fsdp_config.model_dtype)
    card_gib: float
    vllm_fraction: float  # rollout.gpu_memory_utilization, 0 without vLLM
    vllm_param_bytes: int = 2  # rollout.dtype
    tensor_parallel: int = 1
    param_offload: bool = False
    optimizer_offload: bool = False
    offload_policy: bool = False  # FSDP2's CPUOffloadPolicy
    free_cache_engine: bool = True
    bucket_mb: int = 2048  # checkpoint_engine.update_weights_bucket_megabytes

    def gib(self, bytes_per_param: float) -> float:
        """GiB per GPU of `bytes_per_param` bytes for each sharded parameter."""
        return self.params * bytes_per_param / self.shard / GIB


def phases(setup: Setup) -> dict[str, dict[str, float]]:
    """{phase: {component: GiB per GPU}} (the module docstring gives the model)."""
    params, grads, adam = (setup.gib(setup.param_bytes * k) for k in (1, 1, 2))
    on_cpu = setup.offload_policy
    vllm = setup.vllm_fraction * setup.card_gib
    awake = {"vLLM": vllm, "actor params": 0.0 if setup.param_offload or on_cpu else params,
             "Adam": 0.0 if setup.optimizer_offload or on_cpu else adam, "CUDA contexts": CONTEXTS_GIB}  # fmt: skip
    vllm_weights = setup.params * setup.vllm_param_bytes / setup.tensor_parallel / GIB if vllm else 0.0
    during_sync = {"vLLM weights": vllm_weights, "actor params": 0.0 if on_cpu else params,
                   "sync bucket": setup.bucket_mb / 1024 if vllm else 0.0, "Adam": awake["Adam"],
                   "CUDA contexts": CONTEXTS_GIB}  # fmt: skip
    update = {"vLLM": 0.0 if setup.free_cache_engine else vllm, "actor params": 0.0 if on_cpu else params,
              "gradients": 0.0 if on_cpu else grads, "Adam": 0.0 if on_cpu else adam, "CUDA contexts": CONTEXTS_GIB}  # fmt: skip
    sync = awake if sum(awake.values()) >= sum(during_sync.values()) else during_sync
    return {"rollout and weight sync": sync, "update": update}


def peak(setup: Setup) -> tuple[str, float]:
    """(phase, GiB) of the largest phase."""
    totals = {name: sum(parts.values()) for name, parts in phases(setup).items()}
    name = max(totals, key=totals.get)
    return name, totals[name]


def settings_that_fit(setup: Setup, n_gpus_per_node: int) -> list[str]:
    """Overrides that bring the peak under WARN_FRACTION of the card, each with its estimate (more
    GPUs in steps of `n_gpus_per_node`; 0 when FSDP's shard group would not grow with them)."""
    candidates = [
        ({"optimizer_offload": True}, f"{ACTOR}.optimizer_offload=true"),
        ({"param_offload": True, "optimizer_offload": True},
         f"{ACTOR}.param_offload=true {ACTOR}.optimizer_offload=true"),
    ]  # fmt: skip
    for percent in range(int(setup.vllm_fraction * 100) - 5, 25, -5):
        candidates.append(({"vllm_fraction": percent / 100}, f"{ROLLOUT}.gpu_memory_utilization={percent / 100:.2f}"))
        if _fits(dataclasses.replace(setup, vllm_fraction=percent / 100)):
            break
    for gpus in range(setup.shard + n_gpus_per_node, 16 * setup.shard + 1, n_gpus_per_node) if n_gpus_per_node else ():
        candidates.append(({"shard": gpus}, f"{gpus} GPUs in all (trainer.nnodes x trainer.n_gpus_per_node, over which FSDP shards)"))  # fmt: skip
        if _fits(dataclasses.replace(setup, shard=gpus)):
            break
    found = []
    for changes, text in candidates:
        changed = dataclasses.replace(setup, **changes)
        if _fits(changed):
            found.append(f"{text} -> {peak(changed)[1]:.1f} GiB ({peak(changed)[1] / setup.card_gib:.0%})")
    return found


def _fits(setup: Setup) -> bool:
    return peak(setup)[1] <= WARN_FRACTION * setup.card_gib


def card_gib() -> tuple[float, str]:
    """(GiB, where the size came from): the size the user named, else the driver's GPU, else 80."""
    named = os.environ.get(GPU_MEMORY_ENV)
    if named:
        try:
            value = float(named)
        except ValueError:
            value = -1.0
        if value <= 0:
            raise ValueError(f"--gpu-memory-gb / {GPU_MEMORY_ENV}={named!r} is not allowed: give the GPU's memory in GiB, e.g. 80.")  # fmt: skip
        return value, "named"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB, f"this machine's {torch.cuda.get_device_name(0)}"
    return DEFAULT_GPU_MEMORY_GB, "the default; name yours with --gpu-memory-gb"


def setup_of(config, card: float) -> tuple[Setup | None, str]:
    """The Setup of a composed config and the model's shape, or (None, why it is not estimated)."""
    actor, rollout, trainer = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout, config.trainer
    if trainer.get("device", "cuda") != "cuda":
        return None, f"not estimated: trainer.device={trainer.device}"
    if actor.get("strategy", "fsdp") not in ("fsdp", "fsdp2"):
        return None, f"not estimated for actor_rollout_ref.actor.strategy={actor.strategy} (FSDP only)"
    path = str(config.actor_rollout_ref.model.path)
    shape = model_shape(path)
    if shape is None:
        return None, (f"not estimated: model {path} is neither a local folder, nor in the Hugging Face cache, "
                      "nor a paper recipe's model")  # fmt: skip
    fsdp = actor.fsdp_config
    world = trainer.nnodes * trainer.n_gpus_per_node
    fsdp_size = fsdp.get("fsdp_size", -1) or -1
    vllm = rollout.get("name") == "vllm"
    setup = Setup(
        params=shape.params,
        shard=world if fsdp_size < 0 or fsdp_size >= world else fsdp_size,
        param_bytes=DTYPE_BYTES.get(str(fsdp.get("model_dtype") or "fp32"), 4),
        card_gib=card,
        vllm_fraction=float(rollout.gpu_memory_utilization) if vllm else 0.0,
        vllm_param_bytes=DTYPE_BYTES.get(str(rollout.get("dtype", "bfloat16")), 2),
        tensor_parallel=rollout.tensor_model_parallel_size,
        param_offload=bool(fsdp.get("param_offload")),
        optimizer_offload=bool(fsdp.get("optimizer_offload")),
        offload_policy=bool(fsdp.get("offload_policy")) and actor.strategy == "fsdp2",
        free_cache_engine=bool(rollout.get("free_cache_engine", True)),
        bucket_mb=int(rollout.checkpoint_engine.get("update_weights_bucket_megabytes", 2048)),
    )
    return setup, f"{path}: {shape.params / 1e9:.2f}B parameters (from {shape.source})"


def kv_cache_line(setup: Setup, shape: ModelShape, max_model_len: int | None, kv_bytes: int) -> tuple[str, bool]:
    """vLLM's room for its KV cache (an upper bound: its workspace and graphs come out of it too),
    and whether it holds one sequence of max_model_len (vLLM refuses to start otherwise)."""
    room = setup.vllm_fraction * setup.card_gib - setup.params * setup.vllm_param_bytes / setup.tensor_parallel / GIB
    per_token = 2 * shape.layers * max(1, shape.kv_heads // setup.tensor_parallel) * shape.head_dim * kv_bytes
    tokens = max(0.0, room) * GIB / per_token
    text = f"vLLM KV cache at most {room:.1f} GiB per GPU = {tokens / 1e3:,.0f}k tokens"
    if max_model_len:
        text += f" = {tokens / max_model_len:,.0f} sequences of max_model_len {max_model_len}"
    return text, tokens >= (max_model_len or 1)


def _phase_line(name: str, parts: dict, card: float) -> str:
    total = sum(parts.values())
    terms = " + ".join(f"{part} {gib:.1f}" for part, gib in parts.items() if gib)
    return f"{name}: {total:.1f} GiB ({total / card:.0%}) = {terms}"


def check_memory(config) -> tuple[list[str], list[str]]:
    """(lines for the dry run, warnings); refuses a run whose estimate exceeds the card."""
    card, where = card_gib()
    setup, about = setup_of(config, card)
    if setup is None:
        return [about], []
    lines = [f"per GPU of {card:.1f} GiB ({where}); {about}; FSDP shard over {setup.shard} GPUs"]
    lines += [_phase_line(name, parts, card) for name, parts in phases(setup).items()]
    lines.append("  (the update's activations come on top: they grow with actor_rollout_ref.actor.ppo_max_token_len_per_gpu)")  # fmt: skip
    problems = []
    if setup.vllm_fraction:
        shape = model_shape(str(config.actor_rollout_ref.model.path))
        rollout = config.actor_rollout_ref.rollout
        kv_bytes = DTYPE_BYTES.get(str(rollout.get("dtype", "bfloat16")), 2)
        text, holds = kv_cache_line(setup, shape, rollout.get("max_model_len"), kv_bytes)
        lines.append(text)
        if not holds:
            problems.append(f"{text}: vLLM would refuse to start; raise {ROLLOUT}.gpu_memory_utilization or "
                            f"{ROLLOUT}.tensor_model_parallel_size")  # fmt: skip
    phase, total = peak(setup)
    share = total / card
    # more GPUs shrink the shard only when FSDP shards over all of them (fsdp_size=-1)
    gpus_step = (
        config.trainer.n_gpus_per_node if setup.shard == config.trainer.nnodes * config.trainer.n_gpus_per_node else 0
    )
    summary = f"the {phase} needs about {total:.1f} GiB per GPU, {share:.0%} of the {card:.1f} GiB card ({where})"
    if share > 1:
        fits = settings_that_fit(setup, gpus_step)
        problems.append(f"{summary}: it would run out of memory. "
                        + (f"Settings that fit under {WARN_FRACTION:.0%}: {'; '.join(fits)}." if fits else
                           "No offload or gpu_memory_utilization fits it: use more or larger GPUs."))  # fmt: skip
    if problems:
        raise ValueError("memory estimate (maspo_verl/preflight/memory.py): " + " ".join(problems))
    warnings = []
    if share > WARN_FRACTION:
        fits = settings_that_fit(setup, gpus_step)
        warnings.append(f"{summary}: above {WARN_FRACTION:.0%} the allocator's fragmentation and the activations "
                        f"can tip it over. Settings under {WARN_FRACTION:.0%}: {'; '.join(fits) or 'none found'}.")  # fmt: skip
    return lines, warnings


def memory_step(config, found: dict, dry_run: bool) -> dict:
    lines, warnings = check_memory(config)
    return {"memory": lines, "memory_warnings": warnings}
