"""The sweep's PNGs: one figure per regime, one curve per preset (mean over seeds, band from the
lowest to the highest seed), drawn with the report's own aggregation (maspo_verl/report/curves.py).

Panels: held-out accuracy (the probe, mean@8 at T=1, the warm start at step 0), training reward,
policy entropy, the share of policy-gradient weight the loss removed relative to -A * rho (the
same figure for every loss, docs/algorithms.md), the headline figure (kit: the late accuracy,
the mean of the probes in the run's last third) per preset with every seed,
and each preset's paired difference with grpo with its Holm-level interval (the controls: their
95% interval). The instrument's controls (lr0, replicate, no_trust_region) are drawn dashed.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..launch import REWARD
from ..report.curves import aggregate
from .summary import ENTROPY, KINDS, WEIGHT_REMOVED, read_steps
from .sweep import CONTROLS, PROBE_SAMPLES, available_presets, run_directory

PANELS = [  # (series key, title, y label, sparse)
    ("held-out", f"held-out accuracy (probe, T=1, mean@{PROBE_SAMPLES})", "accuracy", True),
    (REWARD, "training reward (mean over rollouts)", "reward", False),
    (ENTROPY, "policy entropy", "nats / token", False),
    (WEIGHT_REMOVED, "policy-gradient weight removed vs -A·r", "mean share over tokens", False),
]
SMOOTH = 3  # steps averaged in the dense panels; validation points are drawn as they are


def run_series(run_dir: Path, figures: dict) -> dict:
    """metric -> {step: value} for one run: the held-out curve and the dense per-step metrics."""
    steps = read_steps(run_dir / "metrics.jsonl")
    series = {"held-out": {int(step): point[0] for step, point in figures["curve"].items()}}
    for key in (REWARD, ENTROPY, WEIGHT_REMOVED):
        series[key] = {step: data[key] for step, data in steps.items() if key in data}
    return series


def plot_regime(regime: str, block: dict, out: Path, plot_path: Path, what: str, kind: str = "kit") -> Path:
    """One figure for a regime (kit) or recipe: curves per preset, the final figure per preset, and
    the paired differences with grpo. `what` heads the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(block["presets"])
    groups = {
        preset: [
            run_series(run_directory(out, regime, preset, seed), figures)
            for seed, figures in block["runs"].get(preset, {}).items()
        ]  # fmt: skip
        for preset in presets
    }
    colors = preset_colors(presets)
    fig, axes = plt.subplots(2, 3, figsize=(17, 10), layout="constrained")
    panels = PANELS if kind == "kit" else [("held-out", "held-out accuracy (verl validation, mean over benchmarks)",
                                             "accuracy", True), *PANELS[1:]]  # fmt: skip
    for ax, (key, title, ylabel, sparse) in zip(axes.flat, panels):
        for preset in presets:
            agg = aggregate(groups[preset], key, 1 if sparse else SMOOTH) if groups[preset] else None
            if agg is None:
                continue
            bold = preset in EMPHASIS
            ax.plot(agg["step"], agg["mean"], color=colors[preset], label=preset, marker="o" if sparse else None,
                    markersize=3, linewidth=2.6 if bold else 1.1, zorder=3 if bold else 2,
                    linestyle="--" if preset in CONTROLS else "-")  # fmt: skip
            if agg["seeds"] > 1:
                ax.fill_between(agg["step"], agg["min"], agg["max"], color=colors[preset], alpha=0.12, linewidth=0)
        ax.set(title=title, xlabel="training step", ylabel=ylabel)
        ax.grid(alpha=0.3)
    headline = KINDS[kind]["compared"][0]
    label = {key: header for key, header, _ in KINDS[kind]["columns"]}[headline]
    _final_bars(axes.flat[4], block, presets, colors, headline, label)
    _paired_bars(axes.flat[5], block, colors, headline, label)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(8, len(labels)), fontsize=10,
               title="curves: mean over seeds, band from the lowest to the highest seed", title_fontsize=9)  # fmt: skip
    compared = [preset for preset in presets if preset not in CONTROLS]
    seeds = max((len(block["presets"][preset]["seeds"]) for preset in compared), default=0)
    controls = len(presets) - len(compared)
    fig.suptitle(f"{what}: {len(compared)} settings x {seeds} seeds" + (f" + {controls} controls" if controls else ""),
                 fontsize=13)  # fmt: skip
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_path, dpi=80)
    plt.close(fig)
    return plot_path


EMPHASIS = ("grpo", "maspo")


# high-contrast colours for the other presets, in order (grpo and maspo have their own)
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79",
           "#00c853", "#ff1493", "#00bfff", "#b8860b", "#7f7f7f", "#6a3d9a", "#b15928", "#fb9a99", "#1b9e77",
           "#e6ab02", "#80b1d3", "#cab2d6", "#003f5c"]  # fmt: skip


def preset_colors(presets: list[str]) -> dict:
    """grpo black and maspo red (drawn thick); every other preset its own colour, the same in
    every plot (assigned in the order of all presets, then any variants)."""
    fixed = {"grpo": "black", "maspo": "#d62728"}
    order = [p for p in available_presets() if p not in fixed] + sorted(set(presets) - set(available_presets()))
    palette = PALETTE * (1 + len(order) // len(PALETTE))
    assigned = dict(zip(order, palette)) | fixed
    return {preset: assigned[preset] for preset in presets}


def _paired_bars(ax, block: dict, colors: dict, headline: str, label: str) -> None:
    """Each preset minus grpo on the same seeds: the headline figure, mean and its Holm-level t
    interval (a control: its 95% interval); a finding is starred."""
    rows = [(preset, row[headline]) for preset, row in block["paired"].items() if row[headline]["mean"] is not None]
    if not rows:  # a sweep without grpo (or without a seed grpo shares) has nothing to pair
        ax.text(0.5, 0.5, "no seed shared with grpo:\nnothing to pair", transform=ax.transAxes, ha="center",
                va="center", fontsize=9, color="gray")  # fmt: skip
    for index, (preset, stat) in enumerate(rows):
        low, high = stat.get("ci_holm", stat["ci"])
        if stat.get("finding"):
            ax.text(max(stat["mean"], high), index, " *", va="center", fontsize=12)  # right of its interval
        error = None if low is None else [[stat["mean"] - low], [high - stat["mean"]]]
        ax.barh(index, stat["mean"], color=colors[preset], xerr=error, capsize=3,
                hatch="//" if preset in CONTROLS else None, alpha=0.6 if preset in CONTROLS else 1.0)  # fmt: skip
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [preset for preset, _ in rows], fontsize=8)
    ax.invert_yaxis()
    mdd = block["power"]["mdd"]
    if mdd is not None and math.isfinite(mdd):
        ax.axvspan(-mdd, mdd, color="gray", alpha=0.12, linewidth=0)
        # centred in its band, so it never runs past the panel's right edge
        ax.text(0, len(rows) - 0.5, "minimal detectable", fontsize=7, color="gray", ha="center", va="bottom")
    ax.set(title=f"paired with grpo: Δ {label} (Holm-level CI; * finding)", xlabel="difference")
    ax.grid(alpha=0.3, axis="x")


def _final_bars(ax, block: dict, presets: list[str], colors: dict, headline: str, label: str) -> None:
    """The headline figure per preset: mean over seeds with ± 1 standard deviation, every seed
    as a small dot; the grpo mean as a dashed line. Points, not bars: the differences are small
    next to the accuracy itself."""
    for index, preset in enumerate(presets):
        row = block["presets"][preset]
        stat = row[headline]
        if stat["mean"] is None:
            ax.annotate("failed", (index, 0.5), xycoords=("data", "axes fraction"), rotation=90, ha="center",
                        va="center", fontsize=8, color="red")  # fmt: skip
            continue
        ax.errorbar(index, stat["mean"], yerr=stat["std"] or 0, fmt="o", color=colors[preset], capsize=4,
                    markersize=7)  # fmt: skip
        seeds = [figures[headline] for figures in block["runs"][preset].values()]
        ax.scatter([index + 0.18] * len(seeds), seeds, color=colors[preset], s=10, alpha=0.7)
    baseline = block["presets"].get("grpo", {}).get(headline, {}).get("mean")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", linewidth=1)
        # x in axes coordinates: at the panel's right edge whatever the number of presets
        ax.text(1.0, baseline, "grpo ", transform=ax.get_yaxis_transform(), va="bottom", ha="right", fontsize=8,
                color="gray")  # fmt: skip
    ax.set_xticks(range(len(presets)), presets, rotation=60, ha="right", fontsize=8)
    ax.set(title=f"{label} (± 1 sd, small dots: seeds)", ylabel=label)
    ax.grid(alpha=0.3, axis="y")
