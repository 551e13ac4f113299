"""Time and memory of every policy loss against verl's `vanilla`, side by side.

Every loss of every preset (verl's vanilla, sapo, gspo, cispo and ours: maspo, dac, bapo) runs
through verl's own registry on the same batch (default 1024 x 1024 = 1M response tokens),
forward + backward, eager and torch.compile. Prints a table and each loss's ratio to vanilla
measured in this run.

    python benchmarks/bench_policy_loss.py [--device cuda] [--rows 1024] [--cols 1024] [--no-compile] [--losses maspo,dac]
"""

import argparse
import json
import time

import torch
import verl  # noqa: F401  (registers maspo through the verl.plugins entry point)
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.workers.config import ActorConfig, PolicyLossConfig

import maspo_verl
from maspo_verl.config import CONFIG_CLASSES

VERL_LOSSES = ["vanilla", "sapo", "gspo", "cispo"]


def actor_config(loss_mode):
    """Each loss with its own config class (ours) or verl's, defaults otherwise."""
    config_class = CONFIG_CLASSES.get(loss_mode)
    policy_loss = config_class() if config_class else PolicyLossConfig(loss_mode=loss_mode)
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
    parser.add_argument(
        "--losses", default=",".join(VERL_LOSSES + list(CONFIG_CLASSES)), help="comma-separated loss modes"
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    maspo_verl.register()
    batch = make_batch(args.rows, args.cols, args.device)
    names = ["vanilla"] + [name for name in args.losses.split(",") if name and name != "vanilla"]
    losses = {name: (get_policy_loss_fn(name), actor_config(name)) for name in names}
    modes = ["eager"] + ([] if args.no_compile else ["compile"])
    results = {}
    for mode in modes:
        for name, (fn, config) in losses.items():
            fn = torch.compile(fn) if mode == "compile" else fn
            results[f"{name}/{mode}"] = measure(fn, config, batch, args.device, args.repeats, args.warmup)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    tokens = int(batch["response_mask"].sum())
    print(
        f"device: {device_name}   batch: {args.rows} x {args.cols} ({tokens} valid tokens)   torch {torch.__version__}"
    )
    print(f"{'loss/mode':<18}{'median ms':>12}{'min ms':>10}{'extra peak MiB':>16}")
    on_cuda = args.device == "cuda"  # peak memory is only tracked by the CUDA allocator
    for key, r in results.items():
        memory = f"{r['extra_peak_MiB']:.1f}" if on_cuda else "-"
        print(f"{key:<18}{r['median_ms']:>12.3f}{r['min_ms']:>10.3f}{memory:>16}")
    for mode in modes:
        v = results[f"vanilla/{mode}"]
        for name in names[1:]:
            m = results[f"{name}/{mode}"]
            memory = f", extra peak memory {m['extra_peak_MiB'] / v['extra_peak_MiB']:.2f}x" if on_cuda else ""
            print(f"ratio {name}/vanilla ({mode}): time {m['median_ms'] / v['median_ms']:.2f}x{memory}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device_name, "tokens": tokens, "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
