"""Time and memory of every policy loss against verl's `vanilla`, side by side.

Every loss of every preset (verl's vanilla, sapo, gspo, cispo and ours: maspo, dac, bapo) runs
through verl's own registry on the same batch (default 1024 x 1024 = 1M response tokens),
forward + backward, eager and torch.compile. Prints a table and each loss's ratio to vanilla
measured in this run.

The losses are timed in rounds: every round runs each loss once, so a load that comes and goes
on a shared machine hits them all alike. A loss's ratio to vanilla is the median over rounds of
its time divided by vanilla's time in the same round. ``--clock cpu`` times the process's CPU
time instead of the wall clock (on a shared CPU machine, with ``--threads 1``, it leaves out
the time other processes held the core). The ``ops`` column counts the aten operations one
eager forward + backward dispatches (views left out): in eager mode on a GPU every one of
them is at least one kernel launch, which at this size costs more than its arithmetic.

    python benchmarks/bench_policy_loss.py [--device cuda] [--rows 1024] [--cols 1024] [--no-compile]
        [--losses maspo,dac] [--threads N] [--clock wall|cpu]
"""

import argparse
import json
import time

import torch
import verl  # noqa: F401  (registers maspo through the verl.plugins entry point)
from torch.utils._python_dispatch import TorchDispatchMode
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


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_one(loss_fn, config, batch, device, clock):
    sync(device)
    start = clock()
    step(loss_fn, config, batch)
    sync(device)
    return clock() - start


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active, views left out (they launch nothing)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops += 1
        return func(*args, **(kwargs or {}))


def count_ops(loss_fn, config, batch):
    with OpCounter() as counter:
        step(loss_fn, config, batch)
    return counter.ops


def extra_peak_mib(loss_fn, config, batch, device):
    """Peak memory of one step above what was allocated before it (CUDA only)."""
    if device != "cuda":
        return float("nan")
    sync(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(loss_fn, config, batch)
    sync(device)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def measure_rounds(losses, batch, device, repeats, warmup, clock):
    """{name: stats}; every round times each loss once (see the module docstring)."""
    for fn, config in losses.values():
        for _ in range(warmup):
            step(fn, config, batch)
    times = {name: [] for name in losses}
    for _ in range(repeats):
        for name, (fn, config) in losses.items():
            times[name].append(time_one(fn, config, batch, device, clock))
    results = {}
    for name, (fn, config) in losses.items():
        ratios = [t / v for t, v in zip(times[name], times["vanilla"])]
        results[name] = {
            "median_ms": 1e3 * median(times[name]),
            "min_ms": 1e3 * min(times[name]),
            "median_ratio_to_vanilla": median(ratios),
            "extra_peak_MiB": extra_peak_mib(fn, config, batch, device),
        }
    return results


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
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU); default: torch's")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="wall time or the process's CPU time")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    maspo_verl.register()
    batch = make_batch(args.rows, args.cols, args.device)
    names = ["vanilla"] + [name for name in args.losses.split(",") if name and name != "vanilla"]
    losses = {name: (get_policy_loss_fn(name), actor_config(name)) for name in names}
    modes = ["eager"] + ([] if args.no_compile else ["compile"])
    results = {}
    for mode in modes:
        runs = {name: (torch.compile(fn) if mode == "compile" else fn, config) for name, (fn, config) in losses.items()}
        for name, stats in measure_rounds(
            runs, batch, args.device, args.repeats, args.warmup, CLOCKS[args.clock]
        ).items():
            results[f"{name}/{mode}"] = stats
            if mode == "eager":
                stats["ops"] = count_ops(*losses[name], batch)

    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    tokens = int(batch["response_mask"].sum())
    print(
        f"device: {device_name}   batch: {args.rows} x {args.cols} ({tokens} valid tokens)   torch {torch.__version__}"
    )
    threads = torch.get_num_threads() if args.device == "cpu" else "-"
    print(f"{args.repeats} rounds, {args.warmup} warm-up calls per loss, {args.clock} clock, threads: {threads}")
    print(f"{'loss/mode':<18}{'median ms':>12}{'min ms':>10}{'/ vanilla':>11}{'ops':>6}{'extra peak MiB':>16}")
    on_cuda = args.device == "cuda"  # peak memory is only tracked by the CUDA allocator
    for key, r in results.items():
        memory = f"{r['extra_peak_MiB']:.1f}" if on_cuda else "-"
        ratio = f"{r['median_ratio_to_vanilla']:.2f}x"
        ops = r.get("ops", "-")
        print(f"{key:<18}{r['median_ms']:>12.3f}{r['min_ms']:>10.3f}{ratio:>11}{ops:>6}{memory:>16}")
    for mode in modes:
        v = results[f"vanilla/{mode}"]
        for name in names[1:]:
            m = results[f"{name}/{mode}"]
            memory = f", extra peak memory {m['extra_peak_MiB'] / v['extra_peak_MiB']:.2f}x" if on_cuda else ""
            print(f"ratio {name}/vanilla ({mode}): time {m['median_ratio_to_vanilla']:.2f}x{memory}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": device_name, "tokens": tokens, "clock": args.clock, "threads": threads, "results": results},
                f,
                indent=2,
            )
    return results


if __name__ == "__main__":
    main()
