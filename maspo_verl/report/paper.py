"""The MASPO paper's own numbers (arXiv 2602.17550): Avg@32 / Pass@32 in percent, per model size.

Transcribed from the paper's tables (the project's shared docs, paper-tables.md). For the 14B
model the paper gives only the Avg column, for GRPO and MASPO.
"""

from __future__ import annotations

import re

BENCHMARKS = ("AIME24", "AIME25", "AMC23", "MATH500", "Minerva", "Olympiad")
PAPER_K = 32
SOURCE = "MASPO paper (arXiv 2602.17550), Avg@32 / Pass@32"

_ROWS_1P5B = """
GRPO        | 33.2/71.8 | 27.7/49.9 | 79.5/94.8 | 77.6/90.8 | 26.1/48.8 | 46.3/64.7 | 48.4/70.1
Clip Higher | 36.6/70.1 | 30.1/55.8 | 82.8/94.9 | 71.7/88.6 | 24.8/49.3 | 42.0/61.6 | 48.0/70.1
DAC         | 40.0/73.6 | 28.7/51.2 | 80.2/95.0 | 78.1/92.5 | 27.4/54.0 | 46.3/64.5 | 50.1/71.8
Entropy Adv.| 29.6/67.8 | 23.9/44.2 | 77.1/94.1 | 78.5/89.7 | 25.2/48.6 | 46.4/64.3 | 46.8/68.1
BAPO        | 38.3/72.3 | 28.0/55.7 | 80.1/94.9 | 74.9/91.0 | 25.1/44.7 | 44.0/61.3 | 48.4/70.0
SAPO        | 39.3/73.7 | 28.0/49.9 | 82.7/94.8 | 79.1/91.4 | 29.6/52.7 | 48.2/66.7 | 51.2/71.5
MASPO       | 41.0/74.8 | 28.4/58.0 | 82.2/95.0 | 78.0/89.7 | 30.7/54.1 | 47.8/65.7 | 51.4/72.9
"""
_ROWS_7B = """
GRPO        | 48.2/82.5 | 37.4/60.5 | 88.1/96.6 | 84.8/92.4 | 37.4/57.2 | 57.2/73.9 | 58.9/77.2
Clip Higher | 47.4/82.4 | 37.4/67.2 | 89.0/96.6 | 85.3/95.4 | 38.8/58.5 | 57.5/75.5 | 59.2/79.3
DAC         | 50.2/81.2 | 36.2/61.7 | 88.1/99.6 | 85.1/94.8 | 36.6/58.7 | 57.9/76.0 | 59.0/78.7
Entropy Adv.| 49.1/81.5 | 34.4/58.1 | 87.7/96.6 | 84.8/92.5 | 36.5/54.0 | 56.4/73.7 | 58.2/76.1
BAPO        | 47.1/80.3 | 37.7/58.4 | 89.2/97.2 | 85.0/94.5 | 38.3/57.5 | 57.1/74.5 | 59.1/77.1
SAPO        | 47.5/79.2 | 35.3/58.0 | 88.7/95.0 | 85.5/92.9 | 39.4/58.1 | 56.6/74.6 | 58.8/76.3
MASPO       | 53.2/82.4 | 42.9/73.2 | 91.4/95.0 | 86.0/94.7 | 39.3/58.6 | 58.0/74.9 | 61.8/79.8
"""
_ROWS_14B = """
GRPO  | 53.6/67.4
MASPO | 56.4/71.1
"""


def _parse(text: str, columns) -> dict:
    table = {}
    for line in text.strip().splitlines():
        name, *cells = [c.strip() for c in line.split("|")]
        table[name] = {col: tuple(float(x) for x in cell.split("/")) for col, cell in zip(columns, cells, strict=True)}
    return table


PAPER = {
    "1.5B": _parse(_ROWS_1P5B, (*BENCHMARKS, "Avg")),
    "7B": _parse(_ROWS_7B, (*BENCHMARKS, "Avg")),
    "14B": _parse(_ROWS_14B, ("Avg",)),
}

# data_source (or file) names -> paper column; compared after lower-casing and dropping non-alphanumerics
_ALIASES = {
    "AIME24": ("aime24", "aime2024"),
    "AIME25": ("aime25", "aime2025"),
    "AMC23": ("amc23", "amc2023", "amc", "amc83"),  # amc83: AMC 2022+2023, the set FlowRL ships
    "MATH500": ("math500", "math"),
    "Minerva": ("minerva", "minervamath"),
    "Olympiad": ("olympiad", "olympiadbench"),
}


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def benchmark_column(data_source: str) -> str | None:
    """The paper column a data_source belongs to, or None. Matches the last path segment too
    (``HuggingFaceH4/MATH-500`` -> MATH500, ``maspo/aime24`` -> AIME24)."""
    for candidate in (data_source, data_source.rsplit("/", 1)[-1]):
        key = _norm(candidate)
        for column, aliases in _ALIASES.items():
            if key in aliases:
                return column
    return None


def paper_method(label: str) -> str | None:
    """The paper's method a run label names (``maspo-seed1`` -> MASPO), longest match first."""
    key = _norm(label)
    for method in sorted({m for t in PAPER.values() for m in t}, key=lambda m: -len(_norm(m))):
        if key.startswith(_norm(method)):
            return method
    return None


def infer_model_size(text: str) -> str | None:
    match = re.search(r"(?<![\d.])(1\.5|7|14)\s*[bB](?![a-zA-Z])", text)
    return f"{match.group(1)}B" if match else None
