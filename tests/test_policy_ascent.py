"""One small on-policy step through verl's own actor path goes uphill on the kit.

The check that tells a pipeline bug from a learning-dynamics problem: take the kit's warm-started
model, sample a fixed set of responses, score them with the kit's reward, compute GRPO advantages
with verl's estimator, and apply ONE update through verl 0.9.1's engine-path actor worker (FSDP2,
the kit's fp32 precision, `update_actor` exactly as the v1 trainer calls it) with a small learning
rate. Then compare the expected reward of those prompts before and after, computed exactly from the
actor's own sequence log-probabilities (`compute_log_prob`, before and after) on the fixed set:

    J(theta) = mean over prompts p of  sum_{y in S_p} pi(y) R(y) / sum_{y in S_p} pi(y)

with S_p the distinct sampled responses of prompt p (the policy restricted to the responses it
produced). A correct pipeline raises J. The control flips the advantages' sign, the most common
way a pipeline goes wrong (a sign, a reward handed to the wrong response), and must lower it.

Each run happens in a subprocess (verl picks its hardware platform once per process), as in
tests/test_update_actor_cpu.py, whose worker harness this file reuses.
"""

import sys
from pathlib import Path

import pytest

from gloo_ranks import print_result, run_ranks, verl_worker_env

TESTS_DIR = Path(__file__).resolve().parent
N_PROMPTS, N_SAMPLES = 16, 8
# Small: Adam's first step moves every weight by about the learning rate, whatever its gradient.
LEARNING_RATE = 1e-5
SIGNS = {"advantages": 1.0, "negated_advantages": -1.0}


# ---------------------------------------------------------------- the run (subprocess side)


def sample_fixed_set(kit, seed: int = 0):
    """N_PROMPTS training prompts x N_SAMPLES responses at temperature 1 from the kit's warm start,
    in the v1 trainer's per-sample format (as AgentLoopWorkerTQ puts them into TransferQueue)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maspo_verl.kit import reward
    from maspo_verl.kit.model import generation_config, prompt_token_ids
    from maspo_verl.kit.tasks import get_task
    from maspo_verl.padding import left_pad

    task = get_task(kit.task)
    score = getattr(reward, task.reward_name)
    train, _ = task.split_problems(kit.info["settings"]["seed"], kit.info["val_size"])
    problems = train[:N_PROMPTS]
    tokenizer = AutoTokenizer.from_pretrained(kit.model_dir)
    model = AutoModelForCausalLM.from_pretrained(kit.model_dir, dtype=torch.float32).eval()
    prompts = prompt_token_ids(tokenizer, problems)
    repeated = [index for index in range(N_PROMPTS) for _ in range(N_SAMPLES)]
    ids, mask = left_pad([prompts[index] for index in repeated], tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.no_grad():
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=generation_config(tokenizer, False, task.max_response_tokens),
        )
    samples, uids, rewards, texts = [], [], [], []
    for row, index in enumerate(repeated):
        response = generated[row, ids.shape[1] :].tolist()
        if tokenizer.eos_token_id in response:  # keep the eos, drop the padding after it
            response = response[: response.index(tokenizer.eos_token_id) + 1]
        text = tokenizer.decode(response, skip_special_tokens=True)
        value = score(solution_str=text, ground_truth=problems[index].answer)
        value = value["score"] if isinstance(value, dict) else value
        prompt_ids, response_ids = torch.tensor(prompts[index]), torch.tensor(response)
        rm_scores = torch.zeros(len(response))
        rm_scores[-1] = value
        samples.append(
            {
                "prompts": prompt_ids,
                "responses": response_ids,
                "response_mask": torch.ones(len(response), dtype=torch.int64),
                "loss_mask": torch.ones(len(response), dtype=torch.int64),
                "input_ids": torch.cat([prompt_ids, response_ids]),
                "position_ids": torch.arange(len(prompt_ids) + len(response)),
                "rm_scores": rm_scores,
            }
        )
        uids.append(f"prompt{index}")
        rewards.append(value)
        texts.append(text)
    return samples, uids, rewards, texts


def restricted_expected_reward(sequence_log_probs, uids, rewards, texts) -> float:
    """J: per prompt, the reward's expectation under the policy renormalised over the distinct
    responses sampled for it; then the mean over prompts."""
    import math

    per_prompt = {}
    for log_prob, uid, value, text in zip(sequence_log_probs, uids, rewards, texts):
        per_prompt.setdefault(uid, {})[text] = (log_prob, value)  # duplicates: one entry each
    expectations = []
    for responses in per_prompt.values():
        top = max(log_prob for log_prob, _ in responses.values())
        weights = {text: math.exp(log_prob - top) for text, (log_prob, _) in responses.items()}
        total = sum(weights.values())
        expectations.append(sum(weights[text] * value for text, (_, value) in responses.items()) / total)
    return sum(expectations) / len(expectations)


def run_ascent(sign: float) -> dict:
    import torch
    from test_update_actor_cpu import grpo_advantages, with_extra_info
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested

    from maspo_verl.kit import build_kit
    from verl_config import compose_ours

    kit = build_kit(task="add", log=lambda message: None)
    actor = "actor_rollout_ref.actor."
    config = compose_ours(
        "+kit=tiny_cpu",
        "algorithm=grpo",
        f"actor_rollout_ref.rollout.n={N_SAMPLES}",
        f"{actor}ppo_mini_batch_size={N_PROMPTS}",  # one mini-batch: one on-policy optimizer step
        f"{actor}ppo_micro_batch_size_per_gpu={N_PROMPTS * N_SAMPLES}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={N_PROMPTS * N_SAMPLES}",
        f"{actor}optim.lr={LEARNING_RATE}",
        f"{actor}optim.total_training_steps=10",  # set by the trainer from the dataloader
        f"{actor}shuffle=false",
    )
    samples, uids, rewards, texts = sample_fixed_set(kit)
    fields = tu.list_of_dict_to_tensordict(samples)
    # jagged like TransferQueue's, even where every prompt has the same length (stacked dense otherwise)
    fields["prompts"] = torch.nested.as_nested_tensor([s["prompts"] for s in samples], layout=torch.jagged)
    temperature = config.actor_rollout_ref.rollout.temperature
    worker = ActorRolloutRefWorker(config=config.actor_rollout_ref, role="actor")
    worker.init_model()

    def sequence_log_probs():
        output = worker.compute_log_prob(
            with_extra_info(fields, calculate_entropy=False, compute_loss=False, temperature=temperature)
        )
        per_token = response_from_nested(output["log_probs"], fields["response_mask"])
        return per_token, per_token.to_padded_tensor(0.0).sum(dim=1).tolist()

    fields["old_log_probs"], before = sequence_log_probs()
    advantages = grpo_advantages(fields, uids)
    advantages["advantages"] = advantages["advantages"] * sign
    fields.update(advantages)
    actor_config = config.actor_rollout_ref.actor
    worker.update_actor(
        with_extra_info(
            fields,
            calculate_entropy=False,
            distillation_use_topk=False,
            distillation_only=False,
            global_batch_size=N_PROMPTS * N_SAMPLES,
            mini_batch_size=N_PROMPTS * N_SAMPLES,
            epochs=1,
            seed=actor_config.data_loader_seed,
            dataloader_kwargs={"shuffle": False},
            temperature=temperature,
        )
    )
    _, after = sequence_log_probs()
    return {
        "J_before": restricted_expected_reward(before, uids, rewards, texts),
        "J_after": restricted_expected_reward(after, uids, rewards, texts),
        "mean_reward": sum(rewards) / len(rewards),
        "distinct_responses": len(set(zip(uids, texts))),
        "max_abs_log_prob_change": max(abs(b - a) for b, a in zip(before, after)),
        "finite": all(torch.isfinite(torch.tensor(after)).tolist()),
    }


def child_main(runs: list) -> None:
    sys.path.insert(0, str(TESTS_DIR))
    import verl  # noqa: F401  (loads our verl.plugins entry point)

    from maspo_verl.cpu_platform import register_cpu_platform

    register_cpu_platform()
    print_result({run: run_ascent(SIGNS[run]) for run in runs})


# ---------------------------------------------------------------- the tests (pytest side)


@pytest.fixture(scope="module")
def ascent():
    (results,) = run_ranks(__file__, *SIGNS, timeout=600, world_size=1, env=verl_worker_env())
    return results


def test_the_fixed_set_has_signal(ascent):
    """Mixed rewards within prompts (else GRPO's advantages vanish) and distinct responses."""
    run = ascent["advantages"]
    assert 0.1 < run["mean_reward"] < 0.9, run
    assert run["distinct_responses"] > N_PROMPTS, run
    assert run["J_before"] == pytest.approx(ascent["negated_advantages"]["J_before"], abs=1e-6)


def test_one_small_on_policy_step_raises_the_expected_reward(ascent):
    run = ascent["advantages"]
    assert run["finite"]
    assert run["max_abs_log_prob_change"] > 1e-4, run  # the step moved the policy ...
    assert run["J_after"] > run["J_before"] + 1e-3, run  # ... uphill


def test_the_same_step_with_negated_advantages_goes_downhill(ascent):
    run = ascent["negated_advantages"]
    assert run["J_after"] < run["J_before"] - 1e-3, run


if __name__ == "__main__":
    child_main(sys.argv[1:])
