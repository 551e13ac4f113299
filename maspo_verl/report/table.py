"""The paper-style table from eval summaries (``python -m maspo_verl.eval`` output directories)."""

from __future__ import annotations

import json
from pathlib import Path

from maspo_verl.eval.store import PER_BENCHMARK_FIELDS, UNKNOWN, settings_diff, with_unknowns
from maspo_verl.report.paper import BENCHMARKS, PAPER, PAPER_K, SOURCE, benchmark_column, infer_model_size, paper_method


class ReportInputError(ValueError):
    """Bad input to the report, reported as one message."""


def load_summary(path) -> dict:
    """An eval summary, with its directory under ``"path"``."""
    path = Path(path).expanduser()
    file = path / "summary.json" if path.is_dir() else path
    if not file.is_file():
        raise ReportInputError(f"no eval summary at {file} (expected an output dir of python -m maspo_verl.eval)")
    summary = json.loads(file.read_text())
    if not summary.get("complete"):
        raise ReportInputError(f"{file} is from an unfinished evaluation; run the evaluator again to complete it")
    summary["path"] = str(file.parent)
    return summary


def row_settings(summary: dict) -> dict:
    """What must agree for evaluations to share a row: the fingerprint fields ("unknown" where an
    older record lacks them) and k, without the per-benchmark file hashes (their columns' own)."""
    settings = {key: value for key, value in with_unknowns(summary["generation"]).items()
                if key not in PER_BENCHMARK_FIELDS}  # fmt: skip
    return {**settings, "k": summary["k"]}


def _check_one_row(label: str, summaries: list[dict], allow_mixed: bool) -> list[str]:
    """Refuse evaluations of one label that differ in settings or overlap in benchmarks; with
    ``allow_mixed``, return what differs instead."""
    seen: dict[str, str] = {}
    for summary in summaries:
        for data_source in summary["benchmarks"]:
            if data_source in seen:
                raise ReportInputError(
                    f"row {label!r}: benchmark {data_source!r} is in two evaluations ({seen[data_source]} and "
                    f"{summary['path']}); give one of them another label"
                )
            seen[data_source] = summary["path"]
    first = summaries[0]
    differences = []
    for other in summaries[1:]:
        diff = settings_diff(row_settings(first), row_settings(other), (first["path"], other["path"]))
        differences += diff
    if differences and not allow_mixed:
        raise ReportInputError(
            f"refusing to put evaluations with different settings in row {label!r}: "
            + "; ".join(differences)
            + ". Give them different labels, or pass --allow-mixed to combine them anyway"
        )
    return differences


def eval_row(label: str, summaries: list[dict], allow_mixed: bool = False) -> dict:
    """One of our rows, from the evaluations given this label: per paper column (Avg@k %, Pass@k %,
    CI %), plus benchmarks outside the paper."""
    mixed = _check_one_row(label, summaries, allow_mixed)
    cells, other = {}, {}
    for summary in summaries:
        k = summary["k"]
        for data_source, b in summary["benchmarks"].items():
            entry = {
                "avg": 100 * b["avg_at_k"],
                "pass": 100 * b["pass_at_k"][str(k)],
                "ci": [100 * x for x in b["avg_at_k_ci"]],
                "k": k,
                "data_source": data_source,
                "num_problems": b["num_problems"],
                "data_sha256": _benchmark_hash(summary, data_source),
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
    ks = sorted({s["k"] for s in summaries})
    return {"label": label, "k": ks[0] if len(ks) == 1 else "/".join(map(str, ks)), "cells": cells, "other": other,
            "model": summaries[0]["run"].get("model", ""), "method": paper_method(label),
            "settings": _combined_settings(summaries), "fingerprints": [s.get("fingerprint", UNKNOWN) for s in summaries],
            "sources": [s.get("path", "") for s in summaries], "mixed": mixed}  # fmt: skip


def _combined_settings(summaries: list[dict]) -> dict:
    """A row's settings; a field its evaluations disagree on (--allow-mixed) reads "mixed: a / b"."""
    each = [row_settings(s) for s in summaries]
    combined = {}
    for key, value in each[0].items():
        values = list({json.dumps(e[key], sort_keys=True): e[key] for e in each}.values())
        combined[key] = value if len(values) == 1 else "mixed: " + " / ".join(str(v) for v in values)
    return combined


def _benchmark_hash(summary: dict, data_source: str) -> str:
    hashes = with_unknowns(summary["generation"])["data_sha256"]
    return hashes.get(data_source, UNKNOWN) if isinstance(hashes, dict) else UNKNOWN


def build_table(
    evals: list[tuple[str, dict]],
    model_size: str | None = None,
    compare_to: str | None = None,
    allow_mixed: bool = False,
) -> dict:
    """Evaluations given the same label make one row (e.g. benchmarks evaluated in separate runs)."""
    groups: dict[str, list[dict]] = {}
    for label, summary in evals:
        groups.setdefault(label, []).append(summary)
    rows = [eval_row(label, summaries, allow_mixed) for label, summaries in groups.items()]
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


def settings_notes(rows: list[dict]) -> list[str]:
    """The evaluation settings: those all rows share, those that differ between rows (the model
    aside), rows that mix settings (--allow-mixed), and benchmark files that differ between rows."""
    shown = [key for key in rows[0]["settings"] if key not in ("model_fingerprint", "k")]
    same = [key for key in shown if len({json.dumps(r["settings"][key], sort_keys=True) for r in rows}) == 1]
    notes = [
        "",
        "Evaluation settings (fingerprint fields; `unknown`: not recorded by the evaluator that wrote it):",
        "",
    ]
    if same:
        notes.append("- same in every row: " + ", ".join(f"{key} {rows[0]['settings'][key]}" for key in same))
    for key in shown:
        if key not in same:
            notes.append(f"- {key} differs: " + ", ".join(f"{r['label']} {r['settings'][key]}" for r in rows))
    for row in rows:
        if row["mixed"]:
            notes.append(f"- row {row['label']} mixes evaluations with different settings: " + "; ".join(row["mixed"]))
    by_source: dict[str, dict[str, str]] = {}
    for row in rows:
        for c in [*row["cells"].values(), *row["other"].values()]:
            if "data_source" in c:
                by_source.setdefault(c["data_source"], {})[row["label"]] = c["data_sha256"]
    for data_source, hashes in sorted(by_source.items()):
        if len(set(hashes.values())) > 1:
            notes.append(f"- {data_source} file differs between rows (sha256): "
                         + ", ".join(f"{label} {h[:12]}" for label, h in hashes.items()))  # fmt: skip
    return notes


def table_markdown(table: dict) -> str:
    columns = [*BENCHMARKS, "Avg"]
    ks = sorted({c["k"] for r in table["rows"] for c in [*r["cells"].values(), *r["other"].values()] if "k" in c})
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
    out += notes + settings_notes(table["rows"])
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
            rows.append({"row": row["label"], "kind": "ours", "k": c.get("k", row["k"]), "benchmark": column,
                         "avg_at_k": c["avg"], "pass_at_k": c["pass"],
                         "ci_low": c.get("ci", [None, None])[0], "ci_high": c.get("ci", [None, None])[1]})  # fmt: skip
        for ds, c in row["other"].items():
            rows.append({"row": row["label"], "kind": "ours", "k": c["k"], "benchmark": ds,
                         "avg_at_k": c["avg"], "pass_at_k": c["pass"], "ci_low": c["ci"][0], "ci_high": c["ci"][1]})  # fmt: skip
    for method, cols in table["paper_rows"].items():
        for column, (avg, pas) in cols.items():
            rows.append({"row": f"{method} (paper {table['model_size']})", "kind": "paper", "k": table["paper_k"],
                         "benchmark": column, "avg_at_k": avg, "pass_at_k": pas, "ci_low": None, "ci_high": None})  # fmt: skip
    return rows
