"""The dry run (`python -m maspo_verl.main_ppo --dry-run ...`, `DRY_RUN=1 bash examples/paper/...`):
preflight, then verl's own `validate_config` and every config dataclass the run builds (actor,
rollout, checkpoint engine, ref and critic when used, model when its path is a local folder,
algorithm, and the reward manager with the reward function loaded), then the resolved key
settings, printed. It needs no GPU, vLLM or Ray.
"""

from __future__ import annotations

import os
from dataclasses import fields

from omegaconf import OmegaConf, open_dict

from ..algos import LOSSES
from ..losses import loss_params
from .steps import preflight


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


def loss_settings(actor) -> str | None:
    """`<loss>  key=value ...`: every setting a declared loss reads (its Params, from the
    policy-loss section and, for its actor keys, the actor), as the loss will read them."""
    spec = next((spec for spec in LOSSES if spec.name == actor.policy_loss.loss_mode), None)
    if spec is None:
        return None
    params = loss_params(spec, actor)
    return f"{spec.name:<18} " + " ".join(f"{f.name}={getattr(params, f.name)}" for f in fields(spec.params))


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
    settings = loss_settings(actor)
    if settings is not None:
        lines.append(settings)
    lines += [
        f"gpus               {config.trainer.nnodes} node(s) x {config.trainer.n_gpus_per_node} = {summary['n_gpus']} "
        f"(actor dp {summary['dp']}, {summary['rollout_replicas']} rollout replica(s) of tp {rollout.tensor_model_parallel_size})",
        f"batch              {config.data.train_batch_size} prompts x n={rollout.n}, mini-batch {actor.ppo_mini_batch_size} "
        f"-> {summary['updates_per_step']} updates per step, ppo_epochs {actor.ppo_epochs}, dynamic bsz {actor.use_dynamic_bsz}",
        f"lengths            prompt {config.data.max_prompt_length}, response {config.data.max_response_length}",
        f"optimiser          lr {actor.optim.lr}, warmup steps {actor.optim.get('lr_warmup_steps')}, "
        f"weight decay {actor.optim.get('weight_decay')}, grad clip {actor.optim.get('clip_grad')} (actor.optim.clip_grad)",
        f"rollout            {rollout.name}, temperature {rollout.temperature}, top_p {rollout.top_p}, "
        f"max_model_len {rollout.get('max_model_len')}, gpu_memory_utilization {rollout.gpu_memory_utilization}, "
        f"chunked prefill {rollout.enable_chunked_prefill} (max_num_batched_tokens {rollout.max_num_batched_tokens})",
        f"offload            actor params {(actor.get('fsdp_config') or {}).get('param_offload')}, optimizer "
        f"{(actor.get('fsdp_config') or {}).get('optimizer_offload')}",
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
    lines += [f"memory             {line}" for line in summary["memory"]]
    lines += [f"trackers           {line}" for line in summary["trackers"]]
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
