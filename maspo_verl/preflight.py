"""Checks that run on the driver before Ray starts, and the `--dry-run` of the paper recipes.

`preflight(config)` (called by `maspo_verl.main_ppo` before handing over to verl):
  - every train/val file exists, is a readable parquet file and has the columns verl reads
    (`data.prompt_key` as chat messages, `data.reward_fn_key`, `reward_model.ground_truth`);
  - the train set holds at least one batch (`data.train_batch_size` prompts);
  - batch sizes divide as verl requires for `trainer.nnodes x trainer.n_gpus_per_node` GPUs;
  - the custom reward function (if any) can be loaded.
Each failure raises a ValueError / FileNotFoundError naming the setting or file, its value and
what is allowed: today verl only finds these inside its TaskRunner, after the cluster started.

`dry_run(config)` (`python -m maspo_verl.main_ppo --dry-run ...`, `DRY_RUN=1 bash examples/paper/...`)
additionally runs verl's own `validate_config` and builds every config dataclass the run builds
(actor, rollout, checkpoint engine, ref and critic when used, model when its path is a local
folder, algorithm, and the reward manager with the reward function loaded), then prints the resolved key settings. It needs no GPU,
vLLM or Ray.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import ListConfig, OmegaConf, open_dict

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
        sp = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
        if n_gpus % sp:
            raise ValueError(f"actor_rollout_ref.actor.ulysses_sequence_parallel_size={sp} must divide the {gpus}.")
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
        sp = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
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


def preflight(config) -> dict:
    """The cheap checks, on the driver, before Ray starts. Returns what it measured."""
    summary = {"rows": check_data(config)}
    summary.update(check_batch_sizes(config))
    check_reward_function(config)
    return summary


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
    lines.append("built              " + ", ".join(name for name, value in built.items() if value is not None))
    if "model" not in built:
        lines.append(
            f"note               model {config.actor_rollout_ref.model.path} is not a local folder: its tokenizer "
            "and HF config were not loaded (prompt lengths unchecked)"
        )
    return "\n".join(lines)


def dry_run(config) -> str:
    """preflight + verl's validate_config + every dataclass; returns (and prints) the summary."""
    summary = preflight(config)
    built = build_dataclasses(config)
    text = "[maspo_verl dry run] config composed, checks passed, dataclasses built:\n" + describe(
        config, summary, built
    )
    print(text, flush=True)
    return text
