"""`python -m maspo_verl.bench`: run presets x seeds on the kit's chain task and compare them.

    python -m maspo_verl.bench                                   # every preset x 3 seeds, standard regime
    python -m maspo_verl.bench --presets grpo,maspo --seeds 0,1 --regimes standard,stress
    python -m maspo_verl.bench --report-only                     # tables and plots from finished runs

Writes `<out>/<regime>/<preset>/seed<k>/` per run (verl's metrics JSONL, held-out generations,
result.json), then `<out>/summary.md`, `<out>/summary.json` and `<out>/<regime>.png`. Started
again, it skips the finished runs. It measures; it does not assume any method wins.
"""

import argparse
import json
import sys
from pathlib import Path

from .plots import plot_regime
from .summary import markdown, summarize
from .sweep import REGIMES, BenchInputError, available_presets, plan, read_result, run_sweep


def _list(kind):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a comma-separated list ({exc})") from exc

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m maspo_verl.bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--presets", type=_list(str), default=None,
                        help="comma-separated presets of configs/algorithm (default: every one)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar='"NAME=PRESET OVERRIDE ..."',
                        help="also run a preset with overrides of its own, under NAME (repeatable)")  # fmt: skip
    parser.add_argument("--seeds", type=_list(int), default=[0, 1, 2], help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--regimes", type=_list(str), default=["standard"],
                        help=f"comma-separated, from {', '.join(REGIMES)} (default standard)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="training steps per run (default 20)")
    parser.add_argument("--test-freq", type=int, default=10, help="validate every N steps (default 10)")
    parser.add_argument("--val-samples", type=int, default=2,
                        help="samples per held-out prompt in verl's validation (default 2)")  # fmt: skip
    parser.add_argument("--target", type=float, default=0.3, help="accuracy for steps-to-target (default 0.3)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"))
    parser.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    parser.add_argument("--report-only", action="store_true", help="only summarize and plot the finished runs")
    return parser


def report(specs, out: Path, target: float, log=print) -> dict:
    results = {spec.name: result for spec in specs if (result := read_result(spec.directory(out))) is not None}
    summary = summarize(results, out, target)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    text = markdown(summary)
    (out / "summary.md").write_text(text)
    plots = [plot_regime(regime, block, out, out / f"{regime}.png") for regime, block in summary.items()]
    log(text)
    log(f"summary: {out / 'summary.md'}, {out / 'summary.json'}; plots: {', '.join(str(p) for p in plots)}")
    return summary


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        specs = plan(args.presets or available_presets(), args.seeds, args.regimes, args.steps, args.test_freq,
                     args.val_samples, args.variant)  # fmt: skip
    except BenchInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    if not args.report_only:
        run_sweep(specs, out, retry_failed=args.retry_failed)
    summary = report(specs, out, args.target)
    failed = sum(len(row["failed_seeds"]) for block in summary.values() for row in block["presets"].values())
    return 1 if failed else 0


def cli() -> None:
    sys.exit(main())


if __name__ == "__main__":
    cli()
