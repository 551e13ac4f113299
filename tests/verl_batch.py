"""A padded rollout batch as verl's actor sees it, and verl's own ppo_loss run over it in
micro-batches the way the engine runs it (one backward per micro-batch)."""

import math

import torch
from tensordict import TensorDict
from verl.utils import tensordict_utils as tu
from verl.workers.utils.losses import ppo_loss


def make_batch(bsz=6, prompt_len=5, resp_len=9, seed=0, scale=0.7, padding=-math.inf):
    """A padded rollout batch as verl's actor sees it, plus the response log-probs (a leaf).

    Padded old log-probs hold `padding`: -inf by default, what a careless producer might leave
    there (our losses must not care); verl itself pads with 0.
    """
    g = torch.Generator().manual_seed(seed)
    resp_lens = torch.randint(1, resp_len + 1, (bsz,), generator=g)
    resp_lens[0] = resp_len  # at least one full-length response
    response_mask = torch.arange(resp_len)[None, :] < resp_lens[:, None]
    prompt_mask = torch.ones(bsz, prompt_len, dtype=torch.bool)
    old_log_prob = torch.log(torch.rand(bsz, resp_len, generator=g).clamp_min(1e-4))
    old_log_prob = old_log_prob.masked_fill(~response_mask, padding)
    log_prob = (old_log_prob + scale * torch.randn(bsz, resp_len, generator=g)).masked_fill(~response_mask, 0.0)
    scores = torch.randn(bsz, generator=g)
    advantages = (scores[:, None] * response_mask).float()
    data = TensorDict(
        {
            "prompts": torch.ones(bsz, prompt_len, dtype=torch.long),
            "responses": torch.ones(bsz, resp_len, dtype=torch.long),
            "attention_mask": torch.cat([prompt_mask, response_mask], dim=1).long(),
            "response_mask": response_mask.long(),
            "old_log_probs": old_log_prob,
            "advantages": advantages,
        },
        batch_size=[bsz],
    )
    return data, log_prob.requires_grad_(True)


def flat_model_output(data, log_prob, entropy=None):
    """The actor's unpadded output that verl's ppo_loss re-pads (left-shifted by one): log-probs,
    and the token entropy when the actor computes it."""
    output = {"log_probs": flatten(data, log_prob)}
    if entropy is not None:
        output["entropy"] = flatten(data, entropy)
    return output


def flatten(data, log_prob):
    attention = data["attention_mask"].bool()
    prompt_len = data["prompts"].shape[1]
    seq_lens = attention.sum(1)
    offsets = seq_lens.cumsum(0)
    resp_lens = attention[:, prompt_len:].sum(1)
    pieces = []
    for i in range(len(seq_lens)):
        start = offsets[i] - seq_lens[i]
        prompt_part = log_prob.new_zeros(int(seq_lens[i] - resp_lens[i] - 1))
        pieces += [prompt_part, log_prob[i, : resp_lens[i]], log_prob.new_zeros(1)]
        assert start + len(prompt_part) + resp_lens[i] + 1 == offsets[i]
    return torch.cat(pieces)


def token_entropy(data, seed=0):
    """A stand-in for the policy's token entropy: positive, fixed per token."""
    g = torch.Generator().manual_seed(seed)
    return 3 * torch.rand(data["response_mask"].shape, generator=g)


def run_ppo_loss(actor_config, data, log_prob, micro_batch_size, entropy=None):
    """verl's ppo_loss over micro-batches, summed as the engine does (backward per micro-batch).

    With `actor.calculate_entropy` the engine's model output carries the entropy: `entropy`,
    or `token_entropy(data)`.
    """
    if entropy is None and actor_config.calculate_entropy:
        entropy = token_entropy(data)
    bsz = data.batch_size[0]
    batch_num_tokens = int(data["response_mask"].sum())
    total_loss, metrics = 0.0, []
    for start in range(0, bsz, micro_batch_size):
        micro = data[start : start + micro_batch_size].clone()
        tu.assign_non_tensor(micro, dp_size=1, batch_num_tokens=batch_num_tokens, global_batch_size=bsz)
        rows = slice(start, start + micro_batch_size)
        output = flat_model_output(micro, log_prob[rows], None if entropy is None else entropy[rows])
        loss, micro_metrics = ppo_loss(actor_config, output, micro)
        loss.backward()
        total_loss += loss.item()
        metrics.append(micro_metrics)
    return total_loss, metrics
