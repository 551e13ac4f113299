"""The paper-style table from eval summaries (``python -m maspo_verl.eval`` output directories)."""

from __future__ import annotations

import json
from pathlib import Path

from maspo_verl.report.paper import BENCHMARKS, PAPER, PAPER_K, SOURCE, benchmark_column, infer_model_size, paper_method


class ReportInputError(ValueError):
    """Bad input to the report, reported as one message."""


def load_summary(path) -> dict:
    path = Path(path).expanduser()
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise ReportInputError(f"no eval summary at {file} (expected an output dir of python -m maspo_verl.eval)")
    summary = json.loads(file.read_text())
    if not summary.get("complete"):
        raise ReportInputError(f"{file} is from an unfinished evaluation; run the evaluator again to complete it")
    return summary


def eval_row(label: str, summary: dict) -> dict:
    """One of our rows: per paper column (Avg@k %, Pass@k %, CI %), plus benchmarks outside the paper."""
    k = summary["k"]
    cells, other = {}, {}
    for data_source, b in summary["benchmarks"].items():
        entry = {
            "avg": 100 * b["avg_at_k"],
            "pass": 100 * b["pass_at_k"][str(k)],
            "ci": [100 * x for x in b["avg_at_k_ci"]],
            "data_source": data_source,
            "num_problems": b["num_problems"],
        }
        column = benchmark_column(data_source)
        if column is None or column in cells:
            other[data_source] = entry
        else:
            cells[column] = entry
    present = [c for c in BENCHMARKS if c in cells]
    if present:
        cells["Avg"] = {
            "avg": sum(cells[c]["avg"] for c in present) / len(present),
            "pass": sum(cells[c]["pass"] for c in present) / len(present),
            "of": len(present),
        }
    return {"label": label, "k": k, "cells": cells, "other": other, "model": summary["run"].get("model", ""),
            "method": paper_method(label), "generation": summary["generation"]}  # fmt: skip


def build_table(evals: list[tuple[str, dict]], model_size: str | None = None, compare_to: str | None = None) -> dict:
    rows = [eval_row(label, summary) for label, summary in evals]
    if model_size is None:
        sizes = {infer_model_size(r["model"]) for r in rows} - {None}
        model_size = sizes.pop() if len(sizes) == 1 else None
    if model_size is not None and model_size not in PAPER:
        raise ReportInputError(f"--model-size must be one of {list(PAPER)}, got {model_size!r}")
    paper = PAPER.get(model_size, {})
    if compare_to is not None and compare_to not in paper:
        raise ReportInputError(f"--compare-to must be one of the paper's methods {list(paper)}, got {compare_to!r}")
    for row in rows:
        target = compare_to or row["method"]
        row["compared_to"] = target if target in paper else None
        row["diff"] = {}
        if row["compared_to"]:
            for column, (p_avg, p_pass) in paper[target].items():
                mine = row["cells"].get(column)
                if mine and (column != "Avg" or mine.get("of") == len(BENCHMARKS)):
                    row["diff"][column] = [mine["avg"] - p_avg, mine["pass"] - p_pass]
    return {"model_size": model_size, "paper_source": SOURCE, "paper_k": PAPER_K, "rows": rows,
            "paper_rows": {m: {c: list(v) for c, v in cols.items()} for m, cols in paper.items()}}  # fmt: skip


def table_markdown(table: dict) -> str:
    columns = [*BENCHMARKS, "Avg"]
    ks = sorted({r["k"] for r in table["rows"]})
    k_text = "/".join(str(k) for k in ks)
    out = [f"| run | {' | '.join(columns)} |", "|---" * (len(columns) + 1) + "|"]
    for row in table["rows"]:
        cells = []
        for column in columns:
            c = row["cells"].get(column)
            if c is None:
                cells.append("-")
            else:
                star = "*" if column == "Avg" and c["of"] < len(BENCHMARKS) else ""
                cells.append(f"{c['avg']:.1f}/{c['pass']:.1f}{star}")
        out.append(f"| {row['label']} (ours, @{row['k']}) | " + " | ".join(cells) + " |")
    size = table["model_size"]
    for method, cols in table["paper_rows"].items():
        cells = [f"{cols[c][0]:.1f}/{cols[c][1]:.1f}" if c in cols else "-" for c in columns]
        out.append(f"| {method} (paper, {size}, @{table['paper_k']}) | " + " | ".join(cells) + " |")
    for row in table["rows"]:
        if row["diff"]:
            cells = [f"{d[0]:+.1f}/{d[1]:+.1f}" if (d := row["diff"].get(c)) else "-" for c in columns]
            out.append(f"| {row['label']} minus paper {row['compared_to']} | " + " | ".join(cells) + " |")
    notes = [
        "",
        f"Cells: Avg@k / Pass@k in percent; ours at k={k_text}, the paper's rows at k={table['paper_k']}.",
        f"Paper rows: {table['paper_source']}"
        + (f", DeepSeek-R1-Distill-Qwen-{size}." if size else ": not shown (model size unknown; pass --model-size)."),
        "Avg: unweighted mean of the six benchmarks (* = mean of the benchmarks present only; no difference shown).",
    ]
    if any(k != table["paper_k"] for k in ks):
        notes.append(
            f"Note: k differs from the paper's {table['paper_k']}: Pass@k and the difference in it are not comparable."
        )
    out += notes
    out += ["", "Avg@k with 95% confidence intervals (percentile bootstrap over problems):", ""]
    out += ["| run | " + " | ".join(BENCHMARKS) + " |", "|---" * (len(BENCHMARKS) + 1) + "|"]
    for row in table["rows"]:
        cells = []
        for column in BENCHMARKS:
            c = row["cells"].get(column)
            cells.append(f"{c['avg']:.1f} [{c['ci'][0]:.1f}, {c['ci'][1]:.1f}]" if c else "-")
        out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    others = [(row["label"], ds, c) for row in table["rows"] for ds, c in row["other"].items()]
    if others:
        out += ["", "Benchmarks outside the paper's six:", "", "| run | data_source | Avg@k | 95% CI | Pass@k |",
                "|---|---|---|---|---|"]  # fmt: skip
        for label, ds, c in others:
            out.append(f"| {label} | {ds} | {c['avg']:.1f} | [{c['ci'][0]:.1f}, {c['ci'][1]:.1f}] | {c['pass']:.1f} |")
    return "\n".join(out) + "\n"


def table_csv_rows(table: dict) -> list[dict]:
    rows = []
    for row in table["rows"]:
        for column, c in row["cells"].items():
            rows.append({"row": row["label"], "kind": "ours", "k": row["k"], "benchmark": column,
                         "avg_at_k": c["avg"], "pass_at_k": c["pass"],
                         "ci_low": c.get("ci", [None, None])[0], "ci_high": c.get("ci", [None, None])[1]})  # fmt: skip
        for ds, c in row["other"].items():
            rows.append({"row": row["label"], "kind": "ours", "k": row["k"], "benchmark": ds,
                         "avg_at_k": c["avg"], "pass_at_k": c["pass"], "ci_low": c["ci"][0], "ci_high": c["ci"][1]})  # fmt: skip
    for method, cols in table["paper_rows"].items():
        for column, (avg, pas) in cols.items():
            rows.append({"row": f"{method} (paper {table['model_size']})", "kind": "paper", "k": table["paper_k"],
                         "benchmark": column, "avg_at_k": avg, "pass_at_k": pas, "ci_low": None, "ci_high": None})  # fmt: skip
    return rows
