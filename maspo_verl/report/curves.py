"""Training-curve plots (matplotlib, Agg) and their data, one curve per method.

Runs given with the same label are seeds of one method: drawn as the mean over seeds with a
shaded band from the lowest to the highest seed at each step.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from maspo_verl.report.logs import Series

REWARD_KEYS = ("critic/score/mean", "critic/rewards/mean")
_VAL_ACC = re.compile(r"^val-core/(.+)/acc/mean@(\d+)$")
_VAL_REWARD = re.compile(r"^val-core/(.+)/reward/mean@(\d+)$")
FIXED = [  # (metric, title, y label)
    ("actor/entropy", "policy entropy", "entropy (nats / token)"),
    ("response_length/mean", "response length", "tokens (mean over rollouts)"),
    ("response_length/clip_ratio", "truncated responses", "fraction of rollouts"),
    ("actor/pg_clipfrac", "PPO clip fraction (actor/pg_clipfrac)", "fraction of tokens"),
    ("actor/pg_clipfrac_lower", "dual-clip fraction (actor/pg_clipfrac_lower)", "fraction of tokens"),
    ("actor/ppo_kl", "approx. KL to the rollout policy (actor/ppo_kl)", "KL"),
]
# Training-inference mismatch: verl compares the rollout engine's probabilities of the sampled
# tokens with the actor's recomputed ones when actor_rollout_ref.rollout.calculate_log_probs=True
# (verl/utils/debug/metrics.py: |p_rollout - p_actor| per response token, and their Pearson r).
MISMATCH = [
    ("training/rollout_probs_diff_mean", "mismatch: mean |p_rollout - p_actor| per token", "probability"),
    ("training/rollout_probs_diff_max", "mismatch: max |p_rollout - p_actor| per token", "probability"),
    ("training/rollout_actor_probs_pearson_corr", "mismatch: Pearson r of p_rollout, p_actor", "correlation"),
]


def panels(runs: dict[str, list[Series]]) -> list[dict]:
    """The plots to draw: metric, title, y label, whether the metric is sparse (validation)."""
    keys = set().union(*(series.keys() for group in runs.values() for series in group))
    out = []
    reward = next((k for k in REWARD_KEYS if k in keys), None)
    if reward:
        out.append({"metric": reward, "title": "training reward", "ylabel": "mean reward per rollout", "sparse": False})
    val = sorted(k for k in keys if _VAL_ACC.match(k)) or sorted(k for k in keys if _VAL_REWARD.match(k))
    for key in val:
        match = _VAL_ACC.match(key) or _VAL_REWARD.match(key)
        what = "accuracy" if "/acc/" in key else "reward"
        out.append({"metric": key, "title": f"validation {what}: {match.group(1)} (mean@{match.group(2)})",
                    "ylabel": f"{what} (mean over samples)", "sparse": True})  # fmt: skip
    for metric, title, ylabel in FIXED + MISMATCH:
        if metric in keys:
            out.append({"metric": metric, "title": title, "ylabel": ylabel, "sparse": False})
    for key in sorted(k for k in keys if k.startswith("actor/maspo/")):
        out.append({"metric": key, "title": f"MASPO gate: {key.split('/', 2)[2]}", "ylabel": "value", "sparse": False})
    return out


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def aggregate(group: list[Series], metric: str, window: int = 1) -> dict | None:
    """Mean / min / max / std over the seeds that logged each step."""
    per_seed = {}
    for seed, series in enumerate(group):
        points = series.get(metric)
        if points:
            steps = np.array(sorted(points))
            values = smooth(np.array([points[s] for s in steps], dtype=float), window)
            per_seed[seed] = dict(zip(steps.tolist(), values.tolist()))
    if not per_seed:
        return None
    steps = sorted(set().union(*per_seed.values()))
    stacks = [[vals[s] for vals in per_seed.values() if s in vals] for s in steps]
    return {
        "step": steps,
        "mean": [float(np.mean(v)) for v in stacks],
        "min": [float(np.min(v)) for v in stacks],
        "max": [float(np.max(v)) for v in stacks],
        "std": [float(np.std(v)) for v in stacks],
        "n": [len(v) for v in stacks],
        "seeds": len(per_seed),
    }


def _slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_")


def _draw(ax, runs, panel, window, colors):
    for (label, group), color in zip(runs.items(), colors):
        agg = aggregate(group, panel["metric"], 1 if panel["sparse"] else window)
        if agg is None:
            continue
        name = f"{label} (mean of {agg['seeds']} seeds)" if agg["seeds"] > 1 else label
        ax.plot(agg["step"], agg["mean"], color=color, label=name, marker="o" if panel["sparse"] else None,
                markersize=4, linewidth=1.6)  # fmt: skip
        if agg["seeds"] > 1:
            ax.fill_between(agg["step"], agg["min"], agg["max"], color=color, alpha=0.2, linewidth=0)
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel("training step")
    ax.set_ylabel(panel["ylabel"])
    ax.grid(alpha=0.3)


def plot_curves(runs: dict[str, list[Series]], out_dir: Path, window: int = 1, title: str | None = None) -> list[Path]:
    """One PNG per metric (``<out>/curves/<metric>.png``) and an overview grid; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir) / "curves"
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = [colors[i % len(colors)] for i in range(len(runs))]
    spread = any(len(g) > 1 for g in runs.values())
    note = "shaded: lowest to highest seed" if spread else None
    written = []
    chosen = panels(runs)
    for panel in chosen:
        fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
        _draw(ax, runs, panel, window, colors)
        ax.legend(fontsize=8, loc="best", title=note, title_fontsize=8)
        path = out_dir / f"{_slug(panel['metric'])}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    if chosen:
        cols = 3 if len(chosen) > 4 else 2
        rows = -(-len(chosen) // cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(5.2 * cols, 3.6 * rows + 0.8), layout="constrained", squeeze=False
        )
        for ax, panel in zip(axes.flat, chosen):
            _draw(ax, runs, panel, window, colors)
        for ax in list(axes.flat)[len(chosen) :]:
            ax.axis("off")
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=9,
                   title=note, title_fontsize=8)  # fmt: skip
        if title:
            fig.suptitle(title)
        path = Path(out_dir) / "overview.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def export_curves(runs: dict[str, list[Series]], sources: dict[str, list[str]], out_dir: Path, window: int = 1):
    """``curves_long.csv`` (every logged point of every run), ``curves_agg.csv`` and ``curves.json``
    (per method and metric: mean/min/max/std over seeds at each step)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "curves_long.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "seed", "source", "metric", "step", "value"])
        for label, group in runs.items():
            for seed, series in enumerate(group):
                for metric in sorted(series):
                    for step in sorted(series[metric]):
                        writer.writerow([label, seed, sources[label][seed], metric, step, series[metric][step]])
    aggregated = {}
    with open(out_dir / "curves_agg.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "metric", "step", "mean", "min", "max", "std", "n_seeds"])
        for panel in panels(runs):
            for label, group in runs.items():
                agg = aggregate(group, panel["metric"], 1 if panel["sparse"] else window)
                if agg is None:
                    continue
                aggregated.setdefault(label, {})[panel["metric"]] = agg
                for i, step in enumerate(agg["step"]):
                    writer.writerow([label, panel["metric"], step, agg["mean"][i], agg["min"][i], agg["max"][i],
                                     agg["std"][i], agg["n"][i]])  # fmt: skip
    (out_dir / "curves.json").write_text(json.dumps({"smoothing_window": window, "sources": sources,
                                                     "curves": aggregated}, indent=1))  # fmt: skip
