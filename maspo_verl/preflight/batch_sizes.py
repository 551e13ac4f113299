"""The batch-size rules of verl 0.9.1 (its validate_config, the v1 trainer, the engine workers),
for `trainer.nnodes x trainer.n_gpus_per_node` GPUs, in three rule sets after the ones every run
obeys (positive sizes, whole mini-batches split evenly over the data-parallel ranks):

- static micro-batches (`use_dynamic_bsz=False`): micro-batch sizes divide the per-GPU batches;
- dynamic micro-batches (`use_dynamic_bsz=True`): each token budget holds one whole sequence;
- rollout replicas: each replica's GPUs divide the cluster (and, for vLLM, fit on one node).
"""

from __future__ import annotations

from dataclasses import dataclass

from .parallelism import data_parallel_size, ulysses_size


@dataclass(frozen=True)
class Layout:
    """The sizes every rule reads."""

    n_gpus: int
    per_node: int
    dp: int  # the actor's data-parallel ranks
    train_batch: int  # prompts per step
    n: int  # responses per prompt
    mini: int  # prompts per mini-batch (one update)
    gpus: str  # the GPU count as messages name it


def _positive_int(value, setting: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{setting}={value!r} is not allowed: it must be a positive integer.")
    return value


def batch_layout(config) -> Layout:
    """The sizes, each a positive integer, with mini-batches that split evenly over the ranks."""
    actor = config.actor_rollout_ref.actor
    trainer = config.trainer
    nnodes = _positive_int(trainer.nnodes, "trainer.nnodes")
    per_node = _positive_int(trainer.n_gpus_per_node, "trainer.n_gpus_per_node")
    n_gpus = nnodes * per_node
    train_batch = _positive_int(config.data.train_batch_size, "data.train_batch_size")
    n = _positive_int(config.actor_rollout_ref.rollout.n, "actor_rollout_ref.rollout.n")
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
    dp = data_parallel_size(actor, n_gpus, gpus)
    if (mini * n) % dp:
        raise ValueError(
            f"ppo_mini_batch_size x rollout.n = {mini} x {n} = {mini * n} sequences must split evenly over the "
            f"{dp} data-parallel ranks of {gpus} (verl's engine worker asserts mini_batch_size % dp_size == 0)."
        )
    return Layout(n_gpus, per_node, dp, train_batch, n, mini, gpus)


def check_static_batch(config, layout: Layout) -> None:
    """`use_dynamic_bsz=False`: fixed micro-batches must divide the per-GPU batches."""
    actor = config.actor_rollout_ref.actor
    train_batch, n, mini, dp = layout.train_batch, layout.n, layout.mini, layout.dp
    if (train_batch * n) % layout.n_gpus:
        raise ValueError(
            f"data.train_batch_size x rollout.n = {train_batch * n} must be a multiple of the {layout.gpus} "
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


def check_dynamic_batch(config) -> None:
    """`use_dynamic_bsz=True`: each token budget must hold one whole sequence."""
    actor, rollout = config.actor_rollout_ref.actor, config.actor_rollout_ref.rollout
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


def check_rollout_replicas(config, layout: Layout) -> int:
    """Each rollout replica spans tensor x data x pipeline parallel GPUs; returns the replicas."""
    rollout = config.actor_rollout_ref.rollout
    replica = rollout.tensor_model_parallel_size * rollout.data_parallel_size * rollout.pipeline_model_parallel_size
    if layout.n_gpus % replica:
        raise ValueError(
            f"actor_rollout_ref.rollout.tensor_model_parallel_size x data_parallel_size x pipeline_model_parallel_size "
            f"= {replica} must divide the {layout.gpus}."
        )
    if replica > layout.per_node and rollout.get("name") == "vllm":
        raise ValueError(
            f"a vLLM rollout replica of {replica} GPUs does not fit on one node of {layout.per_node} GPUs."
        )
    return layout.n_gpus // replica


def check_batch_sizes(config) -> dict:
    """Every rule; returns the GPUs, the actor's data-parallel size, the updates per step and the
    rollout replicas."""
    layout = batch_layout(config)
    if config.actor_rollout_ref.actor.use_dynamic_bsz:
        check_dynamic_batch(config)
    else:
        check_static_batch(config, layout)
    replicas = check_rollout_replicas(config, layout)
    return {"n_gpus": layout.n_gpus, "dp": layout.dp, "updates_per_step": layout.train_batch // layout.mini,
            "rollout_replicas": replicas}  # fmt: skip


def batch_step(config, found: dict, dry_run: bool) -> dict:
    return check_batch_sizes(config)
