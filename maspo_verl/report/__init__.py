"""Show results the way the paper does: a paper-style table from eval summaries and training-curve
plots from verl's logs. ``python -m maspo_verl.report --help``; see docs/evaluation.md."""

from maspo_verl.report.paper import BENCHMARKS, PAPER, benchmark_column, paper_method
from maspo_verl.report.table import ReportInputError, build_table, load_summary, table_markdown

__all__ = ["BENCHMARKS", "PAPER", "ReportInputError", "benchmark_column", "build_table", "load_summary",
           "paper_method", "table_markdown"]  # fmt: skip
