"""The tiny Qwen2 model: its config, the supervised warm start and an accuracy probe.

The warm start first learns clean addition, then deliberately turns the model
into a *noisy* adder: some SFT targets are hedged ("~82", which the strict
reward rejects) and some are near misses (a digit off by one). Greedy decoding
stays mostly right, but sampling at temperature 1 gives the right sum only
about half the time, which is the regime where a few GRPO steps visibly help.
Near-miss noise alone proved too slow for RL to remove at this scale (it needs
per-digit logit sharpening, which REINFORCE noise with Adam disturbs more than
it helps); dropping the hedge is one problem-independent decision, learnt in
about 10-20 steps of 8 prompts x 8 samples at lr 5e-5..1e-4.
"""

import math
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from ..padding import left_pad
from . import reward
from .task import Problem

MAX_NEW_TOKENS = 8  # the addition task's answers need at most 3 digits and eos; the rest shows runaway outputs


@dataclass(frozen=True)
class ModelShape:
    """Size of the tiny model; part of the cache key."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    max_positions: int = 64


@dataclass(frozen=True)
class WarmStartRecipe:
    """Supervised warm-start settings; part of the cache key."""

    steps: int = 800
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 30
    wrong_target_fraction: float = 0.2  # targets that are near misses (digit off by one)
    hedged_target_fraction: float = 0.3  # targets written "~46", which the strict reward rejects
    clean_steps_fraction: float = 0.75  # learn the function on clean targets first, then add noise


def make_model(tokenizer: PreTrainedTokenizerBase, shape: ModelShape) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2ForCausalLM sized for a CPU (tied embeddings)."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_sliding_window=False,
        dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def generation_config(
    tokenizer: PreTrainedTokenizerBase, greedy: bool = False, max_new_tokens: int = MAX_NEW_TOKENS
) -> GenerationConfig:
    """Stop at ``<|im_end|>`` and pad with ``<|endoftext|>``, as Qwen2 checkpoints do.

    The sampling variant is plain temperature-1 sampling (no top-k/top-p), the
    distribution RL samples from.
    """
    special_ids = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    if greedy:
        return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, **special_ids)
    return GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, **special_ids
    )


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, problems: list[Problem]) -> list[list[int]]:
    """Chat-formatted prompt ids, rendered exactly as verl's rollout renders them."""
    conversations = [[{"role": "user", "content": problem.question}] for problem in problems]
    texts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
    return [tokenizer(text, add_special_tokens=False).input_ids for text in texts]


HEDGE_MARK = "~"


def candidate_targets(problem: Problem) -> list[str]:
    """What the noisy teacher may say: the answer, the hedged answer, then the near misses."""
    return [problem.target, HEDGE_MARK + problem.target] + problem.wrong_targets()


def encode_sft_examples(tokenizer: PreTrainedTokenizerBase, problems: list[Problem]):
    """Tensors for every (problem, candidate answer) pair, right padded.

    Returns ``input_ids [P, C, L]``, ``labels [P, C, L]`` (-100 except on the
    answer and its eos) and ``num_wrong [P]`` (how many near misses exist).
    """
    prompts = prompt_token_ids(tokenizer, problems)
    candidates = [candidate_targets(problem) for problem in problems]
    max_candidates = max(len(options) for options in candidates)
    sequences, labels = [], []
    for prompt, options in zip(prompts, candidates):
        padded_options = options + [options[0]] * (max_candidates - len(options))
        for option in padded_options:
            answer = tokenizer(option, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
            sequences.append(prompt + answer)
            labels.append([-100] * len(prompt) + answer)
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), length), tokenizer.pad_token_id, dtype=torch.long)
    label_ids = torch.full((len(sequences), length), -100, dtype=torch.long)
    for row, (sequence, label) in enumerate(zip(sequences, labels)):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        label_ids[row, : len(label)] = torch.tensor(label)
    shape = (len(problems), max_candidates, length)
    num_wrong = torch.tensor([len(options) - 2 for options in candidates])
    return input_ids.view(shape), label_ids.view(shape), num_wrong


def learning_rate_at(step: int, recipe: WarmStartRecipe) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak."""
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def first_noisy_step(recipe: WarmStartRecipe) -> int:
    """The first warm-start step that trains on noisy targets (hedged answers and near misses)."""
    return math.ceil(recipe.clean_steps_fraction * recipe.steps)


def noisy_target_choice(rows, num_wrong, recipe: WarmStartRecipe, step: int, generator) -> torch.Tensor:
    """Which candidate target each batch row trains on (0 = correct, 1 = hedged, 2+ = near miss)."""
    noisy_phase = step >= first_noisy_step(recipe)
    hedged_rate = recipe.hedged_target_fraction if noisy_phase else 0.0
    wrong_rate = recipe.wrong_target_fraction if noisy_phase else 0.0
    draw = torch.rand(len(rows), generator=generator)
    near_miss = 2 + torch.randint(1 << 16, (len(rows),), generator=generator) % num_wrong[rows]
    choice = torch.zeros(len(rows), dtype=torch.long)
    choice = torch.where(draw < hedged_rate + wrong_rate, near_miss, choice)
    return torch.where(draw < hedged_rate, torch.ones_like(choice), choice)


def warm_start(model, tokenizer, problems: list[Problem], recipe: WarmStartRecipe, seed: int, log=None):
    """Supervised training on noisy targets; returns the loss of each step."""
    input_ids, label_ids, num_wrong = encode_sft_examples(tokenizer, problems)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    model.train()
    losses = []
    noisy_from = first_noisy_step(recipe)
    for step in range(recipe.steps):
        if log is not None and step == noisy_from and noisy_from < recipe.steps:
            hedged, wrong = recipe.hedged_target_fraction, recipe.wrong_target_fraction
            log(
                f"warm start step {step}: the targets turn noisy by design ({hedged:.0%} hedged as '~82', {wrong:.0%} "
                "near misses), so the loss jumps: the habit RL later removes, not an instability"
            )
        rows = torch.randint(len(problems), (recipe.batch_size,), generator=generator)
        choice = noisy_target_choice(rows, num_wrong, recipe, step, generator)
        batch_ids, batch_labels = input_ids[rows, choice], label_ids[rows, choice]
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, recipe)
        attention_mask = (batch_ids != tokenizer.pad_token_id).long()
        loss = model(input_ids=batch_ids, attention_mask=attention_mask, labels=batch_labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if log is not None and (step % 100 == 0 or step == recipe.steps - 1):
            log(f"warm start step {step}: loss {loss.item():.3f}")
    model.eval()
    return losses


@torch.no_grad()
def sample_answers(
    model, tokenizer, problems: list[Problem], greedy: bool, seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS
) -> list[str]:
    """One decoded response per problem (special tokens dropped, as verl's reward loop does)."""
    ids, mask = left_pad(prompt_token_ids(tokenizer, problems), tokenizer.pad_token_id)
    config = generation_config(tokenizer, greedy, max_new_tokens)
    torch.manual_seed(seed)
    output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    return tokenizer.batch_decode(output[:, ids.shape[1] :], skip_special_tokens=True)


def accuracy(
    model, tokenizer, problems: list[Problem], greedy: bool, seed: int = 0, task: str = "add", samples: int = 1
) -> float:
    """Fraction of ``samples`` responses per problem that the task's reward function scores 1.0."""
    from .tasks import get_task

    kit_task = get_task(task)
    score = getattr(reward, kit_task.reward_name)
    repeated = [problem for problem in problems for _ in range(samples)]
    responses = sample_answers(model, tokenizer, repeated, greedy, seed, kit_task.max_response_tokens)
    scores = [score(solution_str=text, ground_truth=problem.answer) for text, problem in zip(responses, repeated)]
    return sum(s["acc"] if isinstance(s, dict) else s for s in scores) / len(scores)
