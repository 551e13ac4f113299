"""Checks that run on the driver before Ray starts, and the `--dry-run` of the paper recipes.

`preflight(config)` (called by `maspo_verl.main_ppo` before handing over to verl):
  - the preset's loss is registered with the installed verl, the recipe sets no key the preset
    sets, and verl's rollout correction gets the rollout's log-probs (`maspo_verl/preset_checks.py`);
  - the trainer is verl's v1 trainer (`trainer.use_v1=false`, verl's legacy trainer, is refused);
  - every train/val file exists, is a readable parquet file and has the columns verl reads
    (`data.prompt_key` as chat messages, `data.reward_fn_key`, `reward_model.ground_truth`);
  - the train set holds at least one batch (`data.train_batch_size` prompts);
  - batch sizes divide as verl requires for `trainer.nnodes x trainer.n_gpus_per_node` GPUs;
  - the custom reward function (if any) can be loaded;
  - Ulysses sequence parallelism > 1 runs with flash attention, the only attention verl patches it into;
  - on a CUDA run, the package of the attention implementation is installed.
Each failure raises a ValueError / FileNotFoundError naming the setting or file, its value and
what is allowed: today verl only finds these inside its TaskRunner, after the cluster started.
Settings that run but not as a reader would expect raise a `PreflightWarning` (shown on the
driver, listed by the dry run): a trust region that cannot act (one update per rollout, the
ratio is 1 at every token), and BAPO choosing its bounds per micro-batch.

`dry_run(config)` (`python -m maspo_verl.main_ppo --dry-run ...`, `DRY_RUN=1 bash examples/paper/...`)
additionally runs verl's own `validate_config` and builds every config dataclass the run builds
(actor, rollout, checkpoint engine, ref and critic when used, model when its path is a local
folder, algorithm, and the reward manager with the reward function loaded), then prints the resolved key settings. It needs no GPU,
vLLM or Ray. A dry run on a machine without CUDA cannot know what the GPU nodes have installed:
a missing attention package is printed as a note there instead of refused.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings
from pathlib import Path

from omegaconf import ListConfig, OmegaConf, open_dict

from .preset_checks import check_presets_and_recipes

REMOTE_PREFIXES = ("hdfs://", "s3://", "gs://", "http://", "https://")


# ----------------------------------------------------------------------------- data files


def _as_list(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (list, tuple, ListConfig)):
        return [str(item) for item in files]
    return [str(files)]


def check_data_file(path: str, setting: str, prompt_key: str = "prompt", reward_fn_key: str = "data_source") -> int:
    """Check one verl parquet file; returns its row count (-1 when remote, not checked)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.startswith(REMOTE_PREFIXES):
        return -1
    local = Path(os.path.expanduser(path))
    if not local.is_file():
        hint = " (prepare it with `python -m maspo_verl.data prepare ...`)" if local.suffix == ".parquet" else ""
        raise FileNotFoundError(f"{setting}: data file {path} does not exist{hint}.")
    try:
        parquet = pq.ParquetFile(local)
    except Exception as error:
        raise ValueError(f"{setting}: {path} is not a readable parquet file ({error}).") from error
    schema = parquet.schema_arrow
    expected = (
        f"expected columns {prompt_key!r} (list of {{role, content}}), {reward_fn_key!r} and reward_model.ground_truth"
    )
    missing = [name for name in (prompt_key, reward_fn_key, "reward_model") if name not in schema.names]
    if missing:
        raise ValueError(f"{setting}: {path} lacks column(s) {missing}; {expected}; found {schema.names}.")
    prompt_type = schema.field(prompt_key).type
    if not (pa.types.is_list(prompt_type) or pa.types.is_large_list(prompt_type)) or not (
        pa.types.is_struct(prompt_type.value_type)
        and {"role", "content"}
        <= {prompt_type.value_type.field(i).name for i in range(prompt_type.value_type.num_fields)}
    ):
        raise ValueError(f"{setting}: {path} column {prompt_key!r} has type {prompt_type}; {expected}.")
    reward_type = schema.field("reward_model").type
    if not pa.types.is_struct(reward_type) or reward_type.get_field_index("ground_truth") < 0:
        raise ValueError(f"{setting}: {path} column 'reward_model' has type {reward_type}; {expected}.")
    rows = parquet.metadata.num_rows
    if rows == 0:
        raise ValueError(f"{setting}: {path} has no rows.")
    return rows


def check_data(config) -> dict:
    """Check `data.train_files` and `data.val_files`; returns {path: rows}."""
    data = config.data
    prompt_key = data.get("prompt_key", "prompt")
    reward_fn_key = data.get("reward_fn_key", "data_source")
    rows = {}
    for setting in ("train_files", "val_files"):
        files = _as_list(data.get(setting))
        if not files:
            raise ValueError(f"data.{setting} is empty; set it to one or more verl parquet files.")
        for path in files:
            rows[path] = check_data_file(path, f"data.{setting}", prompt_key, reward_fn_key)
    train_rows = [rows[path] for path in _as_list(data.train_files)]
    if all(count >= 0 for count in train_rows) and sum(train_rows) < data.train_batch_size:
        raise ValueError(
            f"data.train_batch_size={data.train_batch_size} is larger than the training set "
            f"({sum(train_rows)} rows in {_as_list(data.train_files)}): no full batch, so no training step. "
            "Allowed: at most the number of training rows."
        )
    return rows


# ----------------------------------------------------------------------------- batch sizes


def _positive_int(value, setting: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{setting}={value!r} is not allowed: it must be a positive integer.")
    return value


def check_batch_sizes(config) -> dict:
    """The divisibility rules of verl 0.9.1 (validate_config, the v1 trainer, the engine workers)."""
    actor = config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    trainer = config.trainer
    nnodes = _positive_int(trainer.nnodes, "trainer.nnodes")
    per_node = _positive_int(trainer.n_gpus_per_node, "trainer.n_gpus_per_node")
    n_gpus = nnodes * per_node
    train_batch = _positive_int(config.data.train_batch_size, "data.train_batch_size")
    n = _positive_int(rollout.n, "actor_rollout_ref.rollout.n")
    mini = _positive_int(actor.ppo_mini_batch_size, "actor_rollout_ref.actor.ppo_mini_batch_size")
    gpus = f"{n_gpus} GPUs (trainer.nnodes={nnodes} x trainer.n_gpus_per_node={per_node})"

    if mini > train_batch:
        raise ValueError(
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini} is not allowed: it must be <= data.train_batch_size={train_batch}."
        )
    if train_batch % mini:
        raise ValueError(
            f"data.train_batch_size={train_batch} must be a multiple of actor_rollout_ref.actor.ppo_mini_batch_size={mini} "
            "(otherwise the last mini-batch is padded with dummy sequences)."
        )
    # FSDP data-parallel size: Ulysses sequence parallelism groups GPUs
    strategy = actor.get("strategy", "fsdp")
    if strategy == "megatron":
        megatron = actor.megatron
        model_parallel = (
            megatron.tensor_model_parallel_size * megatron.pipeline_model_parallel_size * megatron.context_parallel_size
        )
        if n_gpus % model_parallel:
            raise ValueError(
                f"{gpus} must be a multiple of megatron tensor x pipeline x context parallel = {model_parallel}."
            )
        dp = n_gpus // model_parallel
    else:
        sp_key, sp = ulysses_size(actor, "actor_rollout_ref.actor")
        if n_gpus % sp:
            raise ValueError(f"{sp_key}={sp} must divide the {gpus}.")
        dp = n_gpus // sp
    if (mini * n) % dp:
        raise ValueError(
            f"ppo_mini_batch_size x rollout.n = {mini} x {n} = {mini * n} sequences must split evenly over the "
            f"{dp} data-parallel ranks of {gpus} (verl's engine worker asserts mini_batch_size % dp_size == 0)."
        )
    if not actor.use_dynamic_bsz:
        if (train_batch * n) % n_gpus:
            raise ValueError(
                f"data.train_batch_size x rollout.n = {train_batch * n} must be a multiple of the {gpus} "
                "(verl validate_config, without dynamic batch size)."
            )
        micro = actor.get("ppo_micro_batch_size_per_gpu")
        if micro is None:
            raise ValueError(
                "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu must be set when use_dynamic_bsz is false."
            )
        if ((mini * n) // dp) % micro:
            raise ValueError(
                f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro} must divide the per-GPU mini-batch "
                f"({mini} x {n} / {dp} = {(mini * n) // dp} sequences)."
            )
        # the log-prob passes (old policy, reference) split the whole per-GPU batch into micro-batches
        per_gpu_batch = (train_batch * n) // dp
        from verl.trainer.ppo.utils import need_reference_policy

        for key in ("rollout", "ref") if need_reference_policy(config) else ("rollout",):
            log_prob_micro = config.actor_rollout_ref[key].get("log_prob_micro_batch_size_per_gpu")
            if log_prob_micro and per_gpu_batch % log_prob_micro:
                raise ValueError(
                    f"actor_rollout_ref.{key}.log_prob_micro_batch_size_per_gpu={log_prob_micro} must divide the per-GPU "
                    f"batch ({train_batch} x {n} / {dp} = {per_gpu_batch} sequences)."
                )
    else:
        longest = config.data.max_prompt_length + config.data.max_response_length
        sp = ulysses_size(actor, "actor_rollout_ref.actor")[1]
        for setting, value in (
            ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", actor.ppo_max_token_len_per_gpu),
            ("actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu", rollout.log_prob_max_token_len_per_gpu),
        ):
            if value is None or value * sp < longest:
                raise ValueError(
                    f"{setting}={value} is too small: with dynamic batch size it must hold one whole sequence, "
                    f"data.max_prompt_length + data.max_response_length = {longest} tokens (divided by sequence parallel {sp})."
                )
    # rollout engines: each replica spans tensor x data x pipeline parallel GPUs
    replica = rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    if n_gpus % replica:
        raise ValueError(
            f"actor_rollout_ref.rollout.tensor_model_parallel_size x data_parallel_size x pipeline_model_parallel_size "
            f"= {replica} must divide the {gpus}."
        )
    if replica > per_node and rollout.get("name") == "vllm":
        raise ValueError(f"a vLLM rollout replica of {replica} GPUs does not fit on one node of {per_node} GPUs.")
    return {"n_gpus": n_gpus, "dp": dp, "updates_per_step": train_batch // mini, "rollout_replicas": n_gpus // replica}


# ----------------------------------------------------------------------------- trainer


def check_trainer(config) -> None:
    """maspo-verl runs on verl's v1 trainer only; verl 0.9.1's legacy trainer is refused."""
    use_v1 = config.trainer.get("use_v1", True)
    if not use_v1:
        raise ValueError(
            f"trainer.use_v1={use_v1} is not allowed: maspo-verl runs on verl's v1 trainer only. Allowed: "
            "trainer.use_v1=True (verl 0.9.1's default; drop the override). verl's legacy trainer "
            "(verl/trainer/main_ppo_v0.py and RayPPOTrainer, which verl itself marks deprecated) never reads "
            "algorithm.filter_groups, so the dapo preset would lose its dynamic sampling without an error, nor "
            "trainer.v1.sampler, the kit's replay buffer; this package does not test it."
        )


# ----------------------------------------------------------------------------- attention


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


# ----------------------------------------------------------------------------- warnings


class PreflightWarning(UserWarning):
    """A setting that runs, but not as a reader of the config would expect."""


def trust_region_warnings(config) -> list[str]:
    """One update per rollout and no bypass mode: the policy that computed old_log_prob is the one
    being updated, so pi / pi_old = 1 at every token and no clip, gate or bound can act.

    Updates per rollout as verl's engine worker runs them (train_mini_batch): each rank's share
    of the train_batch_size x n sequences, in mini-batches of ppo_mini_batch_size x n / dp, for
    ppo_epochs epochs = (train_batch_size / ppo_mini_batch_size) x ppo_epochs (use_dynamic_bsz
    changes the micro-batches only). Rollout correction's bypass_mode makes pi_old the rollout's
    log-probs; its IS weights and rejection sampling (rollout_is, rollout_rs) leave the ratio at 1.
    """
    actor = config.actor_rollout_ref.actor
    train_batch, mini, epochs = config.data.train_batch_size, actor.ppo_mini_batch_size, actor.ppo_epochs
    bypass = bool(OmegaConf.select(config, "algorithm.rollout_correction.bypass_mode", default=False))
    if (train_batch // mini) * epochs != 1 or bypass:
        return []
    return [
        f"the trust region cannot act: data.train_batch_size={train_batch} / "
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini} = 1 mini-batch, actor_rollout_ref.actor.ppo_epochs="
        f"{epochs} and algorithm.rollout_correction.bypass_mode={bypass} make one update per rollout by the policy "
        "that computed old_log_prob, so the ratio pi/pi_old is 1 at every token: no clip, gate or bound "
        f"(clip_ratio_*, actor_rollout_ref.actor.policy_loss.*, loss_mode={actor.policy_loss.loss_mode}) does "
        "anything, and presets that differ only there give the same gradient. For a trust region that acts: "
        "a smaller ppo_mini_batch_size (several updates per rollout) or ppo_epochs > 1."
    ]


def bapo_micro_batch_warnings(config, dp: int) -> list[str]:
    """BAPO chooses its bounds per loss call, i.e. per micro-batch (maspo_verl/algos/bapo.py), not
    once per update as the paper does: say so when an update has several micro-batches."""
    actor = config.actor_rollout_ref.actor
    if actor.policy_loss.get("loss_mode") != "bapo":
        return []
    per_gpu = actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n // dp
    why = (
        "BAPO chooses its clip bounds once per loss call, i.e. per micro-batch, not once per update as the "
        "paper does (docs/algorithms.md, BAPO)"
    )
    if actor.use_dynamic_bsz:
        # verl's prepare_micro_batches: a micro-batch holds max_token_len_per_gpu x sp tokens
        sp = ulysses_size(actor, "actor_rollout_ref.actor")[1]
        budget = actor.ppo_max_token_len_per_gpu * sp
        longest = config.data.max_prompt_length + config.data.max_response_length
        most = min(per_gpu, math.ceil(per_gpu * longest / budget))
        return [
            f"actor_rollout_ref.actor.policy_loss.loss_mode=bapo with actor_rollout_ref.actor.use_dynamic_bsz=True: "
            f"{why}. Dynamic batch size packs each per-GPU mini-batch ({per_gpu} sequences) into micro-batches of "
            f"at most {budget} tokens (actor_rollout_ref.actor.ppo_max_token_len_per_gpu={actor.ppo_max_token_len_per_gpu}"
            + (f" x sequence parallel {sp}" if sp > 1 else "")
            + f"; up to {most} micro-batches here), balanced by sequence length, so the bounds depend on the response "
            "lengths and on the token budget. For one choice per update: use_dynamic_bsz=False with "
            f"ppo_micro_batch_size_per_gpu={per_gpu} (if it fits in memory)."
        ]
    micro = actor.ppo_micro_batch_size_per_gpu
    if micro is None or per_gpu <= micro:
        return []
    return [
        f"actor_rollout_ref.actor.policy_loss.loss_mode=bapo with actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="
        f"{micro}: {why}. Each per-GPU mini-batch of {per_gpu} sequences makes {per_gpu // micro} choices. For one "
        f"choice per update: ppo_micro_batch_size_per_gpu={per_gpu} (if it fits in memory)."
    ]


def preflight_warnings(config, dp: int) -> list[str]:
    """Every warning, each also raised as a PreflightWarning (shown on the driver before Ray)."""
    messages = trust_region_warnings(config) + bapo_micro_batch_warnings(config, dp)
    for message in messages:
        warnings.warn(message, PreflightWarning, stacklevel=3)
    return messages


# ----------------------------------------------------------------------------- reward


def check_reward_function(config) -> None:
    reward = config.get("reward") or {}
    function = reward.get("custom_reward_function") or {}
    path = function.get("path")
    if not path:
        return
    name = function.get("name") or "compute_score"
    from verl.utils.import_utils import load_extern_object

    try:
        load_extern_object(module_path=path, object_name=name)
    except (FileNotFoundError, AttributeError, ImportError, RuntimeError) as error:
        raise ValueError(
            f"reward.custom_reward_function.path={path} / name={name} cannot be loaded ({error}). "
            "Allowed: a file path or pkg://module defining that function, e.g. pkg://maspo_verl.rewards.math_score."
        ) from error


# ----------------------------------------------------------------------------- entry points


def preflight(config, dry_run: bool = False) -> dict:
    """The cheap checks, on the driver, before Ray starts. Returns what it measured.

    `dry_run=True` on a machine without CUDA reports a missing attention package instead of
    refusing: the GPU nodes the dry run prepares for may have it.
    """
    check_presets_and_recipes(config)
    check_trainer(config)
    check_sequence_parallel(config)
    summary = {"rows": check_data(config)}
    summary.update(check_batch_sizes(config))
    check_reward_function(config)
    from maspo_verl.data.templates import check_data_templates  # the reward reads the data's prompt template

    summary["templates"] = check_data_templates(config)
    summary["attention"] = check_attention_packages(config, refuse=not dry_run or _cuda_visible())
    summary["warnings"] = preflight_warnings(config, summary["dp"])
    return summary


def _cuda_visible() -> bool:
    import torch

    return torch.cuda.is_available()


def build_dataclasses(config) -> dict:
    """Build, as verl's TaskRunner and workers do, every config dataclass of the run."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    config = OmegaConf.create(OmegaConf.to_container(config, resolve=True))  # work on a copy
    use_ref, use_critic = need_reference_policy(config), need_critic(config)
    validate_config(config=config, use_reference_policy=use_ref, use_critic=use_critic)
    ref = config.actor_rollout_ref
    built = {}
    built["actor"] = omega_conf_to_dataclass(ref.actor)
    built["rollout"] = omega_conf_to_dataclass(ref.rollout)
    built["checkpoint_engine"] = omega_conf_to_dataclass(ref.rollout.checkpoint_engine)
    if use_ref:  # the engine worker turns the ref section into an actor config like this
        with open_dict(ref.ref):
            ref.ref.ppo_mini_batch_size = ref.actor.ppo_mini_batch_size
            ref.ref.ppo_micro_batch_size = ref.ref.pop("log_prob_micro_batch_size", None)
            ref.ref.ppo_micro_batch_size_per_gpu = ref.ref.pop("log_prob_micro_batch_size_per_gpu", None)
            ref.ref.use_dynamic_bsz = ref.ref.pop("log_prob_use_dynamic_bsz", False)
            ref.ref.ppo_max_token_len_per_gpu = ref.ref.pop("log_prob_max_token_len_per_gpu", None)
        built["ref"] = omega_conf_to_dataclass(ref.ref)
    if use_critic:
        built["critic"] = omega_conf_to_dataclass(config.critic)
    if os.path.isdir(os.path.expanduser(str(ref.model.path))):
        built["model"] = omega_conf_to_dataclass(ref.model)  # loads the tokenizer and HF config
    built["algorithm"] = omega_conf_to_dataclass(config.algorithm)
    _check_registered(config)
    built["reward_manager"] = _build_reward_manager(config)
    return built


def _check_registered(config) -> None:
    """The policy loss and advantage estimator names are looked up only inside the workers."""
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

    loss_mode = config.actor_rollout_ref.actor.policy_loss.loss_mode
    estimator = config.algorithm.adv_estimator
    for setting, value, lookup in (
        ("actor_rollout_ref.actor.policy_loss.loss_mode", loss_mode, get_policy_loss_fn),
        ("algorithm.adv_estimator", estimator, get_adv_estimator_fn),
    ):
        try:
            lookup(value)
        except (ValueError, KeyError, NotImplementedError) as error:
            raise ValueError(f"{setting}={value} is not registered with verl in this process: {error}") from error


def _build_reward_manager(config):
    """The reward manager verl's reward workers build, with the run's config and reward function.

    verl 0.9.1 reads the reward section as a DictConfig (its RewardConfig dataclass cannot be
    built: RewardManagerConfig.__post_init__ calls a missing super method), so this is what
    checks it: the manager's own constructor checks, e.g. the dapo overlong buffer's lengths.
    """
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls

    try:
        cls = resolve_reward_manager_cls(config)
    except Exception as error:
        manager = config.reward.reward_manager
        raise ValueError(
            f"reward.reward_manager.name={manager.get('name')} (source {manager.get('source')}) cannot be resolved: {error}"
        ) from error
    return cls(config, tokenizer=None, compute_score=get_custom_reward_fn(config))


def describe(config, summary: dict, built: dict) -> str:
    """The resolved settings a reader checks before paying for GPUs."""
    actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
    loss = actor.policy_loss
    reward_kwargs = config.reward.get("reward_kwargs")
    reward_kwargs = OmegaConf.to_container(reward_kwargs) if reward_kwargs is not None else {}
    lines = [
        f"model              {config.actor_rollout_ref.model.path}",
        f"algorithm          adv={config.algorithm.adv_estimator} loss_mode={loss.loss_mode} "
        f"loss_agg={actor.loss_agg_mode} clip=({actor.get('clip_ratio_low')}, {actor.get('clip_ratio_high')})",
    ]
    if loss.loss_mode == "maspo":
        lines.append(
            "maspo              "
            + " ".join(
                f"{key}={loss[key]}"
                for key in ("sigma_base", "alpha", "beta_pos", "beta_neg", "sigma_high", "adv_low", "adv_high")
            )
        )
    lines += [
        f"gpus               {config.trainer.nnodes} node(s) x {config.trainer.n_gpus_per_node} = {summary['n_gpus']} "
        f"(actor dp {summary['dp']}, {summary['rollout_replicas']} rollout replica(s) of tp {rollout.tensor_model_parallel_size})",
        f"batch              {config.data.train_batch_size} prompts x n={rollout.n}, mini-batch {actor.ppo_mini_batch_size} "
        f"-> {summary['updates_per_step']} updates per step, ppo_epochs {actor.ppo_epochs}, dynamic bsz {actor.use_dynamic_bsz}",
        f"lengths            prompt {config.data.max_prompt_length}, response {config.data.max_response_length}",
        f"optimiser          lr {actor.optim.lr}, warmup steps {actor.optim.get('lr_warmup_steps')}, "
        f"weight decay {actor.optim.get('weight_decay')}, grad clip {actor.get('grad_clip')}",
        f"rollout            {rollout.name}, temperature {rollout.temperature}, top_p {rollout.top_p}",
        f"validation         n={rollout.val_kwargs.n}, temperature {rollout.val_kwargs.temperature}, "
        f"top_p {rollout.val_kwargs.top_p}, every {config.trainer.test_freq} steps",
        f"reward             manager {config.reward.reward_manager.name}, function "
        f"{config.reward.custom_reward_function.path}:{config.reward.custom_reward_function.name}, "
        f"kwargs {reward_kwargs}",
        f"filter groups      {config.algorithm.filter_groups.enable}",
        f"trainer            epochs {config.trainer.total_epochs}, steps {config.trainer.total_training_steps}, "
        f"save every {config.trainer.save_freq} -> {config.trainer.default_local_dir}, logger {list(config.trainer.logger)}",
    ]
    for path, rows in summary["rows"].items():
        lines.append(f"data               {path}: {rows if rows >= 0 else 'remote, not checked'} rows")
    lines += [f"attention          {line}" for line in summary["attention"]]
    lines += [f"WARNING            {message}" for message in summary["warnings"]]
    lines.append("built              " + ", ".join(name for name, value in built.items() if value is not None))
    if "model" not in built:
        lines.append(
            f"note               model {config.actor_rollout_ref.model.path} is not a local folder: its tokenizer "
            "and HF config were not loaded (prompt lengths unchecked)"
        )
    return "\n".join(lines)


def dry_run(config) -> str:
    """preflight + verl's validate_config + every dataclass; returns (and prints) the summary."""
    summary = preflight(config, dry_run=True)
    built = build_dataclasses(config)
    text = "[maspo_verl dry run] config composed, checks passed, dataclasses built:\n" + describe(
        config, summary, built
    )
    print(text, flush=True)
    return text
