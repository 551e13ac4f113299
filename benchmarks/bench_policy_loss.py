"""Time and memory of MASPO's policy loss against verl's `vanilla`, side by side.

Both losses run through verl's own registry on the same batch (default 1024 x 1024 = 1M
response tokens), forward + backward, eager and torch.compile. Prints a table and the
MASPO / vanilla ratios measured in this run.

    python benchmarks/bench_policy_loss.py [--device cuda] [--rows 1024] [--cols 1024] [--no-compile]
"""

import argparse
import json
import time

import torch
import verl  # noqa: F401  (registers maspo through the verl.plugins entry point)
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig, PolicyLossConfig

import maspo_verl
from maspo_verl.config import MASPOPolicyLossConfig


def actor_config(policy_loss):
    return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, policy_loss=policy_loss)


def make_batch(rows, cols, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    lengths = torch.randint(cols // 4, cols + 1, (rows,), generator=g)
    mask = torch.arange(cols)[None, :] < lengths[:, None]
    old_log_prob = torch.log(torch.rand(rows, cols, generator=g).clamp_min(1e-6))
    log_prob = old_log_prob + 0.3 * torch.randn(rows, cols, generator=g)
    advantages = torch.randn(rows, 1, generator=g).expand(rows, cols) * mask
    to = dict(device=device)
    return dict(
        old_log_prob=old_log_prob.to(**to),
        log_prob=log_prob.to(**to),
        advantages=advantages.contiguous().to(**to),
        response_mask=mask.to(**to),
    )


def step(loss_fn, config, batch):
    log_prob = batch["log_prob"].detach().requires_grad_(True)
    loss, _ = loss_fn(
        old_log_prob=batch["old_log_prob"],
        log_prob=log_prob,
        advantages=batch["advantages"],
        response_mask=batch["response_mask"],
        loss_agg_mode="token-mean",
        config=config,
        rollout_is_weights=None,
    )
    loss.backward()
    return log_prob.grad


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure(loss_fn, config, batch, device, repeats, warmup):
    for _ in range(warmup):
        step(loss_fn, config, batch)
    sync(device)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step(loss_fn, config, batch)
        sync(device)
        times.append(time.perf_counter() - start)
    extra_peak = torch.cuda.max_memory_allocated() - before if device == "cuda" else float("nan")
    times.sort()
    return {"median_ms": 1e3 * times[len(times) // 2], "min_ms": 1e3 * times[0], "extra_peak_MiB": extra_peak / 2**20}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    maspo_verl.register()
    batch = make_batch(args.rows, args.cols, args.device)
    losses = {
        "vanilla": (get_policy_loss_fn("vanilla"), actor_config(PolicyLossConfig(loss_mode="vanilla"))),
        "maspo": (get_policy_loss_fn("maspo"), actor_config(MASPOPolicyLossConfig())),
    }
    modes = ["eager"] + ([] if args.no_compile else ["compile"])
    results = {}
    for mode in modes:
        for name, (fn, config) in losses.items():
            fn = torch.compile(fn) if mode == "compile" else fn
            results[f"{name}/{mode}"] = measure(fn, config, batch, args.device, args.repeats, args.warmup)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    tokens = int(batch["response_mask"].sum())
    print(f"device: {device_name}   batch: {args.rows} x {args.cols} ({tokens} valid tokens)   torch {torch.__version__}")
    print(f"{'loss/mode':<16}{'median ms':>12}{'min ms':>10}{'extra peak MiB':>16}")
    on_cuda = args.device == "cuda"  # peak memory is only tracked by the CUDA allocator
    for key, r in results.items():
        memory = f"{r['extra_peak_MiB']:.1f}" if on_cuda else "-"
        print(f"{key:<16}{r['median_ms']:>12.3f}{r['min_ms']:>10.3f}{memory:>16}")
    for mode in modes:
        m, v = results[f"maspo/{mode}"], results[f"vanilla/{mode}"]
        memory = f", extra peak memory {m['extra_peak_MiB'] / v['extra_peak_MiB']:.2f}x" if on_cuda else ""
        print(f"ratio maspo/vanilla ({mode}): time {m['median_ms'] / v['median_ms']:.2f}x{memory}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "tokens": tokens, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
