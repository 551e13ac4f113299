"""The CPU quickstart: RL on the tiny kit with verl's real trainer, in a few minutes.

    python -m maspo_verl.quickstart [--algorithm maspo] [--steps 60] [--out outputs/quickstart] [overrides...]

Builds the tiny-model kit (cached), runs `python -m maspo_verl.main_ppo +kit=tiny_cpu
algorithm=<algorithm>` (Ray, TaskRunner, hf rollout, GRPO advantages, FSDP2 actor on CPU),
prints per-step progress from verl's own metrics, then a summary, and writes a plot of held-out
accuracy and reward against step. What it shows: the whole pipeline works and RL improves the
model on a small synthetic task. What it does not show: anything about the paper's results.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from .launch import REWARD, RunFailed, run_process

VAL_ACC = "val-core/maspo_kit/arith/acc/mean@1"
# verl's |p_actor - p_rollout| per token: how far from on-policy the rollout sampled (float
# rounding when actor and rollout compute alike; 0.05 when the actor ran in bf16)
MISMATCH = "training/rollout_probs_diff_max"
PROGRESS = [  # (metric, label, format)
    (REWARD, "reward", "{:.2f}"),
    (VAL_ACC, "held-out acc", "{:.3f}"),
    ("actor/maspo/gate_mean", "gate", "{:.3f}"),
    ("actor/maspo/gated_frac_pos", "gated+", "{:.2f}"),
    ("actor/maspo/gated_frac_neg", "gated-", "{:.2f}"),
    ("actor/maspo/clip_frac_ppo", "clip@0.2", "{:.3f}"),
    ("actor/pg_clipfrac", "clipfrac", "{:.3f}"),
    ("actor/ppo_kl", "kl", "{:.4f}"),
    (MISMATCH, "|p_actor-p_rollout|", "{:.0e}"),
    ("timing_s/step", "s", "{:.1f}"),
]


def train_overrides(algorithm: str, steps: int, extra: list, kit: str = "tiny_cpu") -> list:
    return [f"+kit={kit}", f"algorithm={algorithm}", f"trainer.total_training_steps={steps}",
            f"trainer.experiment_name=quickstart_{algorithm}", *extra]  # fmt: skip


def progress_line(record: dict, total_steps: int) -> str:
    data = record["data"]
    parts = [f"step {record['step']:>3}/{total_steps}"]
    for key, label, fmt in PROGRESS:
        if key in data:
            parts.append(f"{label} {fmt.format(data[key])}")
    return "  ".join(parts)


def run_training(overrides: list, out: Path, total_steps: int) -> list:
    """Run verl through the shared launcher, echo each step as it lands; return all step records."""
    try:
        result = run_process(
            overrides, out, on_step=lambda record: print(progress_line(record, total_steps), flush=True)
        )
    except RunFailed as exc:
        sys.exit(f"training failed: {exc}")
    print(f"  start-up (launch to the first training step): {result.startup_seconds:.1f} s", flush=True)
    return result.records


def series(records: list, key: str) -> tuple[list, list]:
    points = [(r["step"], r["data"][key]) for r in records if key in r["data"]]
    return [s for s, _ in points], [v for _, v in points]


def summarize(records: list, algorithm: str, seconds: float) -> dict:
    val_steps, val_acc = series(records, VAL_ACC)
    reward_steps, rewards = series(records, REWARD)
    _, mismatch = series(records, MISMATCH)
    if not val_acc:
        sys.exit("no held-out accuracy was logged: nothing to summarize")
    window = max(1, len(rewards) // 5)
    return {
        "algorithm": algorithm,
        "steps": reward_steps[-1] if reward_steps else 0,
        "held_out_accuracy_start": val_acc[0],
        "held_out_accuracy_end": val_acc[-1],
        "held_out_accuracy": dict(zip(val_steps, val_acc)),
        "reward_first_fifth": sum(rewards[:window]) / window if rewards else None,
        "reward_last_fifth": sum(rewards[-window:]) / window if rewards else None,
        "rollout_actor_prob_diff_max": max(mismatch) if mismatch else None,
        "wall_seconds": round(seconds, 1),
    }


def plot(records: list, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc_ax, reward_ax, mismatch_ax) = plt.subplots(1, 3, figsize=(15, 4))
    val_steps, val_acc = series(records, VAL_ACC)
    acc_ax.plot(val_steps, val_acc, marker="o")
    acc_ax.set(title="held-out accuracy (sampled, T=1)", xlabel="step", ylim=(0, 1))
    reward_steps, rewards = series(records, REWARD)
    reward_ax.plot(reward_steps, rewards, alpha=0.4, label="per step")
    window = 5
    if len(rewards) >= window:
        smooth = [sum(rewards[i - window + 1 : i + 1]) / window for i in range(window - 1, len(rewards))]
        reward_ax.plot(reward_steps[window - 1 :], smooth, label=f"mean of {window}")
    reward_ax.set(title="training reward (mean over rollouts)", xlabel="step", ylim=(0, 1))
    reward_ax.legend()
    mismatch_steps, mismatch = series(records, MISMATCH)
    mismatch_ax.semilogy(mismatch_steps, mismatch, marker=".")
    mismatch_ax.set(title="rollout vs actor: max |p_actor - p_rollout|", xlabel="step", ylim=(1e-8, 1))
    fig.suptitle(f"{summary['algorithm']} on the tiny kit (two-digit addition), verl on CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm", default="maspo", help="a preset of configs/algorithm (default maspo)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for main_ppo")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    from maspo_verl.kit import build_kit

    print("[1/3] tiny-model kit (built once, then cached)", flush=True)
    kit = build_kit(log=lambda message: print(f"  {message}", flush=True))
    print(f"  {kit.root}: warm start held-out accuracy {kit.info['val_accuracy_sampled']:.3f} (sampled)")

    print(f"[2/3] training with algorithm={args.algorithm} through verl's main_ppo (log: {out / 'train.log'})")
    records = run_training(train_overrides(args.algorithm, args.steps, args.overrides), out, args.steps)

    summary = summarize(records, args.algorithm, time.time() - start)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(records, summary, out / "quickstart.png")
    print("[3/3] summary")
    print(
        f"  held-out accuracy {summary['held_out_accuracy_start']:.3f} -> {summary['held_out_accuracy_end']:.3f}; "
        f"training reward {summary['reward_first_fifth']:.3f} -> {summary['reward_last_fifth']:.3f} "
        f"(first vs last fifth of the steps); {summary['wall_seconds']:.0f} s in all"
    )
    if summary["rollout_actor_prob_diff_max"] is not None:
        print(
            f"  rollout vs actor: max |p_actor - p_rollout| {summary['rollout_actor_prob_diff_max']:.1e} over all "
            "tokens and steps (on-policy up to float rounding when small)"
        )
    print(f"  plot: {out / 'quickstart.png'}   metrics: {out / 'metrics.jsonl'}   summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
