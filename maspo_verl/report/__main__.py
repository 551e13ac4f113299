"""`python -m maspo_verl.report --eval LABEL=DIR ... --run LABEL=LOG ... --out DIR`: paper-style table and curves.

--eval: output dirs of `python -m maspo_verl.eval` -> a markdown table (cells "Avg@k / Pass@k"),
with the paper's rows for the model size and our difference to them (table.md/.json/.csv). Give
several --eval with the same LABEL for benchmarks evaluated separately: one row, refused when their
settings differ (--allow-mixed combines them and says what differs).
--run: verl training logs (file-logger .jsonl or TensorBoard event files/dirs) -> PNG curves per
metric and an overview (curves/), plus their data (curves_long.csv, curves_agg.csv, curves.json).
Give several --run with the same LABEL for seeds of one method: drawn as mean and spread.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from maspo_verl.report.table import ReportInputError


def _labelled(value: str) -> tuple[str | None, str]:
    if "=" in value and not Path(value).exists():
        label, path = value.split("=", 1)
        return label, path
    return None, value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m maspo_verl.report", description=__doc__.splitlines()[0])
    p.add_argument(
        "--eval",
        action="append",
        default=[],
        metavar="[LABEL=]DIR",
        help="an eval output dir (repeat; same LABEL = one row)",
    )
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="[LABEL=]LOG",
        help="a training log: verl file-logger .jsonl or TensorBoard dir/file (repeat; same LABEL = seeds)",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--model-size",
        choices=["1.5B", "7B", "14B"],
        default=None,
        help="paper rows to show; default: inferred from the evaluated model's path",
    )
    p.add_argument("--compare-to", default=None, help="paper method every row is compared with (default: by label)")
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="let evaluations with different settings share a row (same --eval LABEL); the report says what differs",
    )
    p.add_argument("--smooth", type=int, default=1, help="moving-average window for per-step curves")
    p.add_argument("--title", default=None, help="title of the overview figure")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    try:
        if not args.eval and not args.run:
            raise ReportInputError("nothing to report: give --eval DIR and/or --run LOG")
        if args.smooth < 1:
            raise ReportInputError(f"--smooth must be >= 1, got {args.smooth}")
        out.mkdir(parents=True, exist_ok=True)
        sections = []
        if args.eval:
            sections.append(report_table(args, out))
        if args.run:
            sections.append(report_curves(args, out))
    except ReportInputError as exc:
        print(f"maspo_verl.report: error: {exc}", file=sys.stderr)
        return 2
    (out / "report.md").write_text("\n".join(sections))
    print("\n".join(sections))
    print(f"written to {out}")
    return 0


def report_table(args, out: Path) -> str:
    from maspo_verl.report.table import build_table, load_summary, table_csv_rows, table_markdown

    evals = []
    for value in args.eval:
        label, path = _labelled(value)
        evals.append((label or Path(path).expanduser().resolve().name, load_summary(path)))
    table = build_table(evals, args.model_size, args.compare_to, allow_mixed=args.allow_mixed)
    for row in table["rows"]:
        if row["mixed"]:
            print(f"warning: row {row['label']!r} mixes settings: " + "; ".join(row["mixed"]), file=sys.stderr)
    markdown = table_markdown(table)
    (out / "table.md").write_text(markdown)
    (out / "table.json").write_text(json.dumps(table, indent=1))
    rows = table_csv_rows(table)
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return "## Evaluation\n\n" + markdown


def report_curves(args, out: Path) -> str:
    from maspo_verl.report.curves import export_curves, plot_curves
    from maspo_verl.report.logs import read_run

    runs: dict[str, list] = {}
    sources: dict[str, list[str]] = {}
    for value in args.run:
        label, path = _labelled(value)
        p = Path(path).expanduser()
        label = label or (p.stem if p.is_file() else p.name)
        series = read_run(p)
        if not series:
            raise ReportInputError(f"{p} holds no numeric metrics")
        runs.setdefault(label, []).append(series)
        sources.setdefault(label, []).append(str(p))
    written = plot_curves(runs, out, window=args.smooth, title=args.title)
    export_curves(runs, sources, out, window=args.smooth)
    lines = ["## Training curves", ""]
    lines += [f"- {label}: {len(group)} run(s)" for label, group in runs.items()]
    lines.append("")
    lines += [f"![{p.stem}]({p.relative_to(out)})" for p in written]
    lines += ["", "Data: curves_long.csv (every point), curves_agg.csv and curves.json (mean/min/max over seeds)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
