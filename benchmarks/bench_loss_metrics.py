"""What the loss-side metrics (maspo_verl/loss_metrics.py) cost per loss call.

Times one call of verl's ppo_loss, forward and backward, through maspo-verl's hook (the policy
loss measured: its gradient with respect to the log-probs, the weight it removes, the ratio
quantiles per quadrant, one host sync) against verl's own ppo_loss without the hook (not
measured), on the same micro-batch, in rounds (each round times both, so a load that comes and
goes hits both alike; on the CPU the clock is the process's CPU time, which leaves out the time
other processes held the core). Prints the median time of each and the median of their per-round
difference and ratio.

    python benchmarks/bench_loss_metrics.py [--presets grpo,maspo] [--rows 16] [--cols 8] [--rounds 200]
        [--threads 1] [--device cpu]

The default micro-batch is the tiny kit's (configs/kit/tiny_cpu.yaml): 16 responses (2 prompts x 8
samples) of at most 8 tokens after 16 prompt tokens.
"""

import argparse
import statistics
import time

import torch
from verl.utils import tensordict_utils as tu
from verl.workers.utils import losses

from maspo_verl.launch import compose_config


def batch(rows, cols, device, seed=0):
    """A padded micro-batch (as in tests/verl_batch.py) and the engine's flat log-probs."""
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    prompt = 16
    lengths = torch.randint(1, cols + 1, (rows,), generator=g)
    mask = torch.arange(cols)[None, :] < lengths[:, None]
    old = torch.log(torch.rand(rows, cols, generator=g).clamp_min(1e-4)).masked_fill(~mask, 0.0)
    log_prob = (old + 0.3 * torch.randn(rows, cols, generator=g)).masked_fill(~mask, 0.0)
    data = TensorDict(
        {
            "prompts": torch.ones(rows, prompt, dtype=torch.long),
            "responses": torch.ones(rows, cols, dtype=torch.long),
            "attention_mask": torch.cat([torch.ones(rows, prompt, dtype=torch.bool), mask], 1).long(),
            "response_mask": mask.long(),
            "old_log_probs": old,
            "advantages": (torch.randn(rows, 1, generator=g) * mask).float(),
        },
        batch_size=[rows],
    ).to(device)
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=rows)
    flat = torch.cat([torch.cat([log_prob.new_zeros(prompt - 1), log_prob[i, : lengths[i]], log_prob.new_zeros(1)])
                      for i in range(rows)]).to(device)  # fmt: skip
    return data, flat


def timed(function, config, data, flat, device) -> float:
    leaf = flat.detach().requires_grad_(True)
    clock = time.perf_counter if device == "cuda" else time.process_time
    if device == "cuda":
        torch.cuda.synchronize()
    start = clock()
    loss, _ = function(config, {"log_probs": leaf}, data)
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="grpo,maspo")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from verl.utils.config import omega_conf_to_dataclass

    hooked, plain = losses.ppo_loss, losses.ppo_loss._maspo_verl_wrapped
    data, flat = batch(args.rows, args.cols, args.device)
    print(f"{args.rows} x {args.cols} response tokens, {args.device}, {args.threads} thread(s), {args.rounds} rounds")
    for preset in args.presets.split(","):
        actor = compose_config([f"algorithm={preset}", "+kit=tiny_cpu"]).actor_rollout_ref.actor
        config = omega_conf_to_dataclass(actor)
        for _ in range(10):  # warm-up
            timed(hooked, config, data, flat, args.device), timed(plain, config, data, flat, args.device)
        rounds = [(timed(hooked, config, data, flat, args.device), timed(plain, config, data, flat, args.device))
                  for _ in range(args.rounds)]  # fmt: skip
        measured, bare = zip(*rounds)
        extra = statistics.median(m - b for m, b in rounds)
        ratio = statistics.median(m / b for m, b in rounds)
        print(f"{preset:8s} measured {statistics.median(measured) * 1e3:7.3f} ms   verl's ppo_loss "
              f"{statistics.median(bare) * 1e3:7.3f} ms   extra {extra * 1e3:+.3f} ms ({ratio:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
