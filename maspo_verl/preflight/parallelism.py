"""Attention and parallelism: the actor's data-parallel size, Ulysses sequence parallelism only
with flash attention (the only attention verl patches it into), and, on a CUDA run, the package
of each attention implementation installed.
"""

from __future__ import annotations

import importlib.util
import warnings

from omegaconf import OmegaConf

# verl's default when actor_rollout_ref.model.override_config.attn_implementation is unset
# (HFModelConfig.__post_init__, verl/workers/config/model.py)
DEFAULT_ATTENTION = "flash_attention_2"
# verl's Ulysses all-to-all is patched into transformers' flash-attention forward only
# (verl/models/transformers/monkey_patch.py), which serves these three implementations
SEQUENCE_PARALLEL_ATTENTION = ("flash_attention_2", "flash_attention_3", "flash_attention_4")
# the version verl 0.9.1's fsdp extra pins; PyPI has it as source only, and its setup imports
# torch, so pip's isolated build fails ("No module named 'torch'") without --no-build-isolation
FLASH_ATTN_INSTALL = "pip install flash-attn==2.8.3 --no-build-isolation"
# attn_implementation -> (the module transformers imports for it, how to install it); the
# others (sdpa, eager, flex_attention) come with torch
ATTENTION_PACKAGES = {
    "flash_attention_2": ("flash_attn", FLASH_ATTN_INSTALL),
    "flash_attention_3": ("flash_attn_interface", "build FlashAttention-3 from hopper/ in Dao-AILab/flash-attention"),
    "flash_attention_4": ("flash_attn", "pip install --pre flash-attn-4"),
}
# "org/name" values are kernels that the `kernels` package downloads from the Hugging Face Hub
HUB_KERNEL_PACKAGE = ("kernels", "pip install kernels")


def _uses_critic(config) -> bool:
    from verl.trainer.ppo.utils import need_critic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Disabled critic ...": verl's main says it again
        return need_critic(config)


def attention_sections(config) -> list[tuple[str, str]]:
    """(model section, role) pairs whose model the run loads with Hugging Face attention: the
    actor's (also the reference's and the hf rollout's) and, when used, the critic's."""
    sections = [("actor_rollout_ref.model", "actor")]
    if _uses_critic(config):
        sections.append(("critic.model", "critic"))
    return sections


def attention_of(config, model_section: str) -> str:
    """The attention implementation a model section selects (verl's default when unset)."""
    override = OmegaConf.select(config, f"{model_section}.override_config") or {}
    return str(override.get("attn_implementation") or DEFAULT_ATTENTION)


def ulysses_size(section, prefix: str) -> tuple[str, int]:
    """(key, size) of the Ulysses sequence parallelism an actor, ref or critic section runs with.

    verl 0.9.1's FSDP engine reads `<section>.fsdp_config.ulysses_sequence_parallel_size`
    (`fsdp` for the critic); the deprecated `<section>.ulysses_sequence_parallel_size` overrides
    it when > 1 (FSDPActorConfig.__post_init__).
    """
    engine = "fsdp" if prefix == "critic" else "fsdp_config"
    top = int(section.get("ulysses_sequence_parallel_size", 1) or 1)
    inner = int((section.get(engine) or {}).get("ulysses_sequence_parallel_size", 1) or 1)
    if top > 1 or inner <= 1:
        return f"{prefix}.ulysses_sequence_parallel_size", top
    return f"{prefix}.{engine}.ulysses_sequence_parallel_size", inner


def check_sequence_parallel(config) -> None:
    """Sequence parallelism > 1 needs flash attention: with any other, nothing errors, but each
    rank attends within its own slice of the sequence and every log-prob is wrong."""
    from verl.trainer.ppo.utils import need_reference_policy

    sections = [("actor_rollout_ref.actor", "actor_rollout_ref.model")]
    if need_reference_policy(config):
        sections.append(("actor_rollout_ref.ref", "actor_rollout_ref.model"))
    if _uses_critic(config):
        sections.append(("critic", "critic.model"))
    for prefix, model_section in sections:
        section = OmegaConf.select(config, prefix)
        if section is None or section.get("strategy", "fsdp") not in ("fsdp", "fsdp2"):
            continue  # Megatron and the other engines parallelise sequences their own way
        key, size = ulysses_size(section, prefix)
        attention = attention_of(config, model_section)
        if size > 1 and attention not in SEQUENCE_PARALLEL_ATTENTION:
            raise ValueError(
                f"{key}={size} with {model_section}.override_config.attn_implementation={attention} is not allowed: "
                "verl patches its sequence-parallel all-to-all into flash attention only, so with "
                f"{attention} each rank would attend within its own slice of the sequence and every log-prob "
                f"would be wrong, without an error. Allowed: attn_implementation one of "
                f"{', '.join(SEQUENCE_PARALLEL_ATTENTION)} (install: {FLASH_ATTN_INSTALL}), or {key}=1."
            )


def _module_installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_run(config) -> bool:
    """Whether the workers will run on CUDA. On Ascend NPUs verl switches `cuda` to `npu`
    (auto_set_device), and flash_attention_2 there is torch_npu's: no flash_attn needed."""
    return config.trainer.get("device", "cuda") == "cuda" and not _module_installed("torch_npu")


def check_attention_packages(config, refuse: bool = True) -> list[str]:
    """On a CUDA run, the package each attention implementation imports must be installed (the
    actor would fail to load after Ray and the GPUs are up). Returns one line per model section;
    with `refuse=False` a missing package is reported in that line instead of raised."""
    lines = []
    for model_section, role in attention_sections(config):
        attention = attention_of(config, model_section)
        base = attention.split("|")[-1]  # "paged|flash_attention_2" imports what flash_attention_2 does
        module, install = HUB_KERNEL_PACKAGE if "/" in base else ATTENTION_PACKAGES.get(base, (None, None))
        if module is None or not _cuda_run(config):
            lines.append(f"{role}: {attention}")
            continue
        if _module_installed(module):
            lines.append(f"{role}: {attention} ({module} installed)")
            continue
        problem = (
            f"{model_section}.override_config.attn_implementation={attention} needs the {module} package, which is "
            f"not installed in this environment (trainer.device=cuda), so the {role} would fail to load after Ray "
            f"and the GPUs are up. Install it: {install}"
            + (" (docs/reproducing.md)" if install == FLASH_ATTN_INSTALL else "")
            + f", or set {model_section}.override_config.attn_implementation=sdpa (slower; not with sequence "
            "parallelism)."
        )
        if refuse:
            raise ValueError(problem)
        lines.append(f"{role}: {attention} NOT INSTALLED HERE: the run would be refused: {problem}")
    return lines


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def data_parallel_size(actor, n_gpus: int, gpus: str) -> int:
    """The actor's data-parallel ranks: the GPUs over Megatron's model parallelism, or over
    Ulysses sequence parallelism (FSDP), which groups GPUs."""
    if actor.get("strategy", "fsdp") == "megatron":
        megatron = actor.megatron
        model_parallel = (
            megatron.tensor_model_parallel_size * megatron.pipeline_model_parallel_size * megatron.context_parallel_size
        )
        if n_gpus % model_parallel:
            raise ValueError(
                f"{gpus} must be a multiple of megatron tensor x pipeline x context parallel = {model_parallel}."
            )
        return n_gpus // model_parallel
    sp_key, sp = ulysses_size(actor, "actor_rollout_ref.actor")
    if n_gpus % sp:
        raise ValueError(f"{sp_key}={sp} must divide the {gpus}.")
    return n_gpus // sp


def sequence_parallel_step(config, found: dict, dry_run: bool) -> dict:
    check_sequence_parallel(config)
    return {}


def attention_step(config, found: dict, dry_run: bool) -> dict:
    # a dry run on a machine without CUDA cannot know what the GPU nodes have installed
    return {"attention": check_attention_packages(config, refuse=not dry_run or _cuda_visible())}
