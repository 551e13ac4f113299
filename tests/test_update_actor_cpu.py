"""MASPO inside verl 0.9.1's real actor update, on CPU.

The engine-path worker the v1 trainer uses (`verl.workers.engine_workers.ActorRolloutRefWorker`,
role "actor", FSDP2 engine) runs in-process on a tiny random Qwen2, built from the config of
`python -m maspo_verl.main_ppo algorithm=maspo`. It is fed a batch in the v1 trainer's format
(jagged tensors, as they come out of TransferQueue) and called the way
`verl/trainer/ppo/v1/trainer_base.py` calls it: `compute_log_prob` for the old log-probs, GRPO
advantages, then `update_actor` with several mini-batches. The worker's metrics then go through
the trainer's own `rename_dict(..., "actor/")` and `reduce_metrics`.

verl picks its hardware platform once per process, so each run happens in a subprocess (this
file, run as a script) with `VERL_PLATFORM=cpu` and a one-process gloo group; it prints JSON.
The `vanilla` run (our `algorithm=grpo` preset) is the control: same batch, no MASPO metrics.
"""

import math
import sys
import time
from pathlib import Path

import pytest

from expected import MASPO_METRICS as EXPECTED_MASPO_METRICS
from gloo_ranks import print_result, run_ranks, verl_worker_env

TESTS_DIR = Path(__file__).resolve().parent

# The run: 4 prompts x 4 responses = 16 samples; mini-batch 1 prompt x 4 = 4 samples, so 4
# optimizer steps per update_actor; micro-batch 2, so 2 loss calls per mini-batch.
N_PROMPTS, N_RESPONSES, MINI_BATCH_PROMPTS, MICRO_BATCH = 4, 4, 1, 2
BATCH = N_PROMPTS * N_RESPONSES
N_MINI_BATCHES = N_PROMPTS // MINI_BATCH_PROMPTS
N_LOSS_CALLS = BATCH // MICRO_BATCH
LEARNING_RATE = 0.05  # large on purpose: the policy must move within one update_actor call

MASPO_METRICS = EXPECTED_MASPO_METRICS + ["actor/ppo_kl"]


# ---------------------------------------------------------------- the run (subprocess side)


# run name -> the algorithm overrides it adds (`user_shaper`: a shaper registered in a test module)
RUNS = {
    "maspo": ["algorithm=maspo"],
    "grpo": ["algorithm=grpo"],
    "entropy_adv": ["algorithm=entropy_adv"],
    "user_shaper": [
        "algorithm=grpo",
        "actor_rollout_ref.actor.policy_loss.advantage_shaper=scale",
        "+actor_rollout_ref.actor.policy_loss.advantage_shaper_kwargs.factor=3.0",
        "actor_rollout_ref.actor.policy_loss.advantage_shaper_module=user_shaper",
    ],
}


def overrides(model_dir: str, run: str) -> list:
    """Hydra overrides on top of `maspo_verl.main_ppo`'s config for a 1-process CPU actor."""
    actor = "actor_rollout_ref.actor."
    return [
        *RUNS[run],
        f"actor_rollout_ref.model.path={model_dir}",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",  # no flash-attn on CPU
        f"actor_rollout_ref.rollout.n={N_RESPONSES}",
        f"{actor}strategy=fsdp2",  # FSDP1 fails on CPU
        f"{actor}ppo_mini_batch_size={MINI_BATCH_PROMPTS}",  # x rollout.n samples
        f"{actor}ppo_micro_batch_size_per_gpu={MICRO_BATCH}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={BATCH}",
        f"{actor}optim.lr={LEARNING_RATE}",
        f"{actor}optim.total_training_steps=10",  # set by the trainer from the dataloader
        f"{actor}shuffle=false",
        "trainer.n_gpus_per_node=1",
    ]


def make_rollout(vocab_size: int, seed: int = 0):
    """Per-sample fields as AgentLoopWorkerTQ puts them into TransferQueue (verl/trainer/ppo/v1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    samples = []
    for prompt in range(N_PROMPTS):
        prompt_ids = torch.randint(3, vocab_size, (int(torch.randint(3, 7, (1,), generator=g)),), generator=g)
        for response in range(N_RESPONSES):
            response_len = int(torch.randint(2, 9, (1,), generator=g))
            response_ids = torch.randint(3, vocab_size, (response_len,), generator=g)
            input_ids = torch.cat([prompt_ids, response_ids])
            # every group has rewarded and unrewarded answers: advantages of both signs
            reward = float((response + prompt) % 2 == 0 or response == 3)
            rm_scores = torch.zeros(response_len)
            rm_scores[-1] = reward
            samples.append(
                {
                    "prompts": prompt_ids,
                    "responses": response_ids,
                    "response_mask": torch.ones(response_len, dtype=torch.int64),
                    "loss_mask": torch.ones(response_len, dtype=torch.int64),
                    "input_ids": input_ids,
                    "position_ids": torch.arange(len(input_ids)),
                    "rm_scores": rm_scores,
                }
            )
    uids = [f"prompt{i // N_RESPONSES}" for i in range(BATCH)]
    return samples, uids


def grpo_advantages(fields, uids):
    """The trainer's _compute_advantage: padded GRPO outcome advantages, written back jagged."""
    import numpy as np
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
    from verl.workers.utils.padding import response_to_nested

    response_mask = fields["response_mask"]
    padded = fields.select("response_mask", "rm_scores").to_padded_tensor()
    advantages, returns = compute_grpo_outcome_advantage(
        token_level_rewards=padded["rm_scores"],
        response_mask=padded["response_mask"],
        index=np.array(uids, dtype=object),
    )
    assert (advantages > 0).any() and (advantages < 0).any()
    return {
        "advantages": response_to_nested(advantages, response_mask),
        "returns": response_to_nested(returns, response_mask),
    }


def with_extra_info(fields, **extra_info):
    """A fresh copy of the batch as the worker receives it: TransferQueue data + extra_info."""
    from verl.utils import tensordict_utils as tu

    data = fields.clone()
    tu.assign_non_tensor(data, **extra_info)
    return data


def snapshot(module):

    return {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for name, p in module.named_parameters()
    }


def run_update_actor(model_dir: str, run: str) -> dict:
    """One v1-trainer step's worker calls (old log-probs, update_actor); returns what it saw."""
    from verl.trainer.ppo import core_algos

    from verl_config import compose_ours

    config = compose_ours(*overrides(model_dir, run))  # resolved, as TaskRunnerV1 does
    loss_mode = config.actor_rollout_ref.actor.policy_loss.loss_mode

    # count every policy-loss call, whichever name verl looks up (restored at the end)
    calls = {"maspo": 0, loss_mode: 0}
    originals = {name: core_algos.POLICY_LOSS_REGISTRY[name] for name in calls}
    for name, original in originals.items():

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        core_algos.POLICY_LOSS_REGISTRY[name] = counted
    try:
        return _one_step(config, calls)
    finally:
        core_algos.POLICY_LOSS_REGISTRY.update(originals)


def _one_step(config, calls: dict) -> dict:
    import torch
    from verl.utils import tensordict_utils as tu
    from verl.utils.metric import reduce_metrics
    from verl.utils.py_functional import rename_dict
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested

    from tiny_qwen import VOCAB_SIZE

    # the trainer's RayClassWithInitArgs(ActorRolloutRefWorker, config=config.actor_rollout_ref, ...)
    worker = ActorRolloutRefWorker(
        config=config.actor_rollout_ref, role="actor", distillation_config=config.get("distillation")
    )
    worker.init_model()
    module = worker.actor.engine.module
    before = snapshot(module)

    samples, uids = make_rollout(vocab_size=VOCAB_SIZE)
    fields = tu.list_of_dict_to_tensordict(samples)
    temperature = config.actor_rollout_ref.rollout.temperature

    # _compute_old_log_prob
    output = worker.compute_log_prob(
        with_extra_info(fields, calculate_entropy=True, compute_loss=False, temperature=temperature)
    )
    fields["old_log_probs"] = response_from_nested(output["log_probs"], fields["response_mask"])
    fields["entropy"] = response_from_nested(output["entropy"], fields["response_mask"])
    calls_after_log_prob = dict(calls)

    # _compute_advantage
    fields.update(grpo_advantages(fields, uids))

    # _update_actor
    actor = config.actor_rollout_ref.actor
    mini_batch_size = actor.ppo_mini_batch_size * config.actor_rollout_ref.rollout.n
    output = worker.update_actor(
        with_extra_info(
            fields,
            calculate_entropy=actor.calculate_entropy or actor.entropy_coeff != 0.0,
            distillation_use_topk=False,
            distillation_only=False,
            global_batch_size=mini_batch_size,
            mini_batch_size=mini_batch_size,
            epochs=actor.ppo_epochs,
            seed=actor.data_loader_seed,
            dataloader_kwargs={"shuffle": actor.shuffle},
            temperature=temperature,
        )
    )
    after = snapshot(module)

    worker_metrics = output["metrics"]
    per_mini_batch = {key: [float(v) for v in val] for key, val in worker_metrics.items() if isinstance(val, list)}
    logged = rename_dict(dict(worker_metrics), "actor/")  # the trainer's _update_actor
    logged["perf/mfu/actor"] = logged.pop("actor/mfu")
    logged = reduce_metrics(logged)

    return {
        "loss_mode": config.actor_rollout_ref.actor.policy_loss.loss_mode,
        "calls": calls,
        "calls_after_log_prob": calls_after_log_prob,
        "worker_metric_types": {key: type(val).__name__ for key, val in worker_metrics.items()},
        "worker_per_mini_batch": per_mini_batch,
        "logged": {key: float(val) for key, val in logged.items()},
        "max_weight_change": max((after[n] - before[n]).abs().max().item() for n in before),
        "old_log_probs_finite": bool(torch.isfinite(fields["old_log_probs"].values()).all()),
    }


def child_main(model_dir: str, runs: list) -> None:
    """Entry point of the subprocess (VERL_PLATFORM=cpu and the gloo env are set by the parent)."""
    sys.path.insert(0, str(TESTS_DIR))
    import verl  # noqa: F401  (loads our verl.plugins entry point)

    from maspo_verl.cpu_platform import register_cpu_platform

    register_cpu_platform()  # before anything asks verl for its platform
    results = {}
    for run in runs:
        start = time.perf_counter()
        results[run] = run_update_actor(model_dir, run)
        results[run]["seconds"] = time.perf_counter() - start
    print_result(results)


# ---------------------------------------------------------------- the tests (pytest side)


@pytest.fixture(scope="module")
def runs(tiny_model_dir):
    """Both presets in one subprocess (one verl import, one gloo group, a fresh worker each)."""
    start = time.perf_counter()
    (results,) = run_ranks(__file__, str(tiny_model_dir), *RUNS, timeout=300, world_size=1, env=verl_worker_env())
    results["wall_seconds"] = time.perf_counter() - start
    return results


def test_maspo_loss_is_what_the_actor_update_calls(runs):
    maspo = runs["maspo"]
    assert maspo["loss_mode"] == "maspo"
    assert maspo["calls_after_log_prob"]["maspo"] == 0  # compute_log_prob computes no loss
    # one call per micro-batch: 4 mini-batches x 2 micro-batches
    assert maspo["calls"]["maspo"] == N_LOSS_CALLS


def test_update_actor_changes_the_weights(runs):
    for preset in ["maspo", "grpo"]:
        assert runs[preset]["old_log_probs_finite"]
        assert runs[preset]["max_weight_change"] > 1e-4, preset


def test_maspo_metrics_reach_the_trainer_log_under_their_documented_names(runs):
    maspo = runs["maspo"]
    per_mini_batch, logged = maspo["worker_per_mini_batch"], maspo["logged"]
    for name in MASPO_METRICS:
        # the worker already returns the final name, one value per mini-batch ...
        assert len(per_mini_batch[name]) == N_MINI_BATCHES, name
        # ... and the trainer's rename_dict leaves it alone: no actor/actor/...
        assert name in logged, name
        # reduce_metrics picks np.max/np.min for names containing "max"/"min": ours get the mean
        assert logged[name] == pytest.approx(sum(per_mini_batch[name]) / N_MINI_BATCHES), name
    assert not [name for name in logged if name.startswith("actor/actor/")]
    assert not [name for name in logged if "maspo" in name and name not in MASPO_METRICS]


def test_no_nan_in_the_logged_metrics(runs):
    for preset in ["maspo", "grpo"]:
        bad = {k: v for k, v in runs[preset]["logged"].items() if not math.isfinite(v)}
        assert not bad, (preset, bad)


def test_the_gate_acts_once_the_policy_has_moved(runs):
    per_mini_batch = runs["maspo"]["worker_per_mini_batch"]
    kl = per_mini_batch["actor/ppo_kl"]
    gated = [
        p + n
        for p, n in zip(per_mini_batch["actor/maspo/gated_frac_pos"], per_mini_batch["actor/maspo/gated_frac_neg"])
    ]
    gate_mean = per_mini_batch["actor/maspo/gate_mean"]
    # mini-batch 1 is on-policy: rho == 1, nothing to gate
    assert gated[0] == 0 and gate_mean[0] == pytest.approx(1.0)
    assert abs(kl[0]) < 1e-5
    # later mini-batches see a policy the earlier optimizer steps moved
    assert any(abs(k) > 1e-4 for k in kl[1:])
    assert any(g > 0 for g in gated[1:])
    assert min(gate_mean[1:]) < 0.999


def test_maspo_and_vanilla_agree_on_policy_and_differ_off_policy(runs):
    """Same weights, same batch: at rho == 1 both losses are -A; afterwards they part."""
    maspo = runs["maspo"]["worker_per_mini_batch"]["actor/pg_loss"]
    vanilla = runs["grpo"]["worker_per_mini_batch"]["actor/pg_loss"]
    assert maspo[0] == pytest.approx(vanilla[0], rel=1e-5)
    assert maspo[1:] != pytest.approx(vanilla[1:], rel=1e-3)


def test_control_vanilla_run_has_no_maspo_metrics_and_never_calls_maspo(runs):
    grpo = runs["grpo"]
    assert grpo["loss_mode"] == "vanilla"
    assert grpo["calls"] == {"maspo": 0, "vanilla": N_LOSS_CALLS}
    assert not [name for name in grpo["logged"] if name.startswith("actor/maspo/")]
    assert "actor/pg_clipfrac" in grpo["logged"] and "actor/ppo_kl" in grpo["logged"]


def test_runtime_stays_small(runs):
    assert runs["wall_seconds"] < 120, runs["wall_seconds"]


if __name__ == "__main__":
    child_main(sys.argv[1], sys.argv[2:])


# ---------------------------------------------------------------- the advantage-shaper hook


def test_a_user_shaper_changes_the_update(runs):
    """`scale` (tests/user_shaper.py, registered by its module named in the config) triples the
    advantages: on the on-policy first mini-batch vanilla's loss is -mean(A), so it triples too,
    and so does the gradient the update clips and steps with (Adam's step barely changes with
    the gradient's scale, so the weights are not the place to see it)."""
    scaled, plain = runs["user_shaper"]["worker_per_mini_batch"], runs["grpo"]["worker_per_mini_batch"]
    assert runs["user_shaper"]["loss_mode"] == "vanilla"
    assert scaled["actor/pg_loss"][0] == pytest.approx(3 * plain["actor/pg_loss"][0], rel=1e-4)
    assert scaled["grad_norm"][0] == pytest.approx(3 * plain["grad_norm"][0], rel=1e-2)  # measured: 2.998x


def test_entropy_advantage_uses_the_entropy_of_the_same_forward_pass(runs):
    shaped, plain = runs["entropy_adv"], runs["grpo"]
    logged = shaped["logged"]
    assert logged["actor/shaper/entropy_adv/entropy_mean"] > 0
    assert logged["actor/shaper/entropy_adv/bonus_mean"] > 0
    # the bonus is never negative: on policy, vanilla's -mean(A') lies below -mean(A)
    assert shaped["worker_per_mini_batch"]["actor/pg_loss"][0] < plain["worker_per_mini_batch"]["actor/pg_loss"][0]
    # verl computed the entropy because the shaper asked (calculate_entropy), and only then
    assert "actor/entropy_loss" in logged and "actor/entropy_loss" not in plain["logged"]
    assert not [name for name in plain["logged"] if name.startswith("actor/shaper/")]
