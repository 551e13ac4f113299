"""Settings that run, but not as a reader of the config would expect: each is said as a
`PreflightWarning` on the driver before Ray starts, and listed by the dry run.

- a trust region that cannot act (one update per rollout: the ratio is 1 at every token);
- BAPO choosing its bounds per micro-batch, not once per update as the paper does.
"""

from __future__ import annotations

import math
import warnings

from omegaconf import OmegaConf

from .parallelism import ulysses_size


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


def preflight_warnings(config, dp: int, more: list[str] = (), stacklevel: int = 3) -> list[str]:
    """Every warning (and `more`, other families' warnings), each also raised as a PreflightWarning
    (shown on the driver before Ray, attributed to the caller of preflight)."""
    messages = trust_region_warnings(config) + bapo_micro_batch_warnings(config, dp) + list(more)
    for message in messages:
        warnings.warn(message, PreflightWarning, stacklevel=stacklevel)
    return messages


def warnings_step(config, found: dict, dry_run: bool) -> dict:
    return {"warnings": preflight_warnings(config, found["dp"], found.get("memory_warnings", ()), stacklevel=4)}
