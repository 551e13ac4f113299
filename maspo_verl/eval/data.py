"""Reading prepared eval parquet files (verl's layout) into problems, with clear errors."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS = ("prompt", "data_source", "reward_model")


class EvalInputError(ValueError):
    """Bad user input, reported as one message before any model is loaded."""


def plain(value: Any) -> Any:
    """numpy arrays / scalars (as pandas reads nested parquet) -> lists, dicts and Python scalars."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Problem:
    problem_id: str  # "<data_source>/<index>", the key of its samples
    data_source: str
    index: Any
    messages: list
    ground_truth: Any
    extra_info: dict = field(default_factory=dict)
    source_file: str = ""

    @property
    def prompt_sha(self) -> str:
        text = json.dumps(self.messages, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path) -> str:
    """sha256 of a file's bytes, as `sha256sum` prints it."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def benchmark_hashes(problems: list[Problem]) -> dict[str, str]:
    """{data_source: sha256 of the file holding its rows} ("+"-joined when several files hold it)."""
    files: dict[str, set[str]] = {}
    for p in problems:
        files.setdefault(p.data_source, set()).add(p.source_file)
    digests = {f: file_sha256(f) for f in set().union(*files.values())} if files else {}
    return {ds: "+".join(sorted(digests[f] for f in fs)) for ds, fs in sorted(files.items())}


def check_files(paths: list) -> list[Path]:
    if not paths:
        raise EvalInputError("no eval data given: pass one or more prepared parquet files with --data")
    out = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_file():
            raise EvalInputError(f"eval data file not found: {path}")
        out.append(path.resolve())
    return out


def load_problems(paths: list, prompt_key: str = "prompt") -> list[Problem]:
    """Every row of every file as a ``Problem``; raises ``EvalInputError`` on a bad file."""
    import pandas as pd

    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path in check_files(paths):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise EvalInputError(f"cannot read {path} as parquet: {exc}") from exc
        needed = (prompt_key,) + REQUIRED_COLUMNS[1:]
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise EvalInputError(
                f"{path} lacks the column(s) {missing} (has {list(frame.columns)}); eval files need verl's layout: "
                f"'{prompt_key}' (chat messages), 'data_source', 'reward_model' with 'ground_truth', optional "
                "'extra_info' with 'index'. Prepare them with `python -m maspo_verl.data prepare <name> --out DIR`."
            )
        if len(frame) == 0:
            raise EvalInputError(f"{path} has no rows")
        for row_number, row in enumerate(frame.to_dict("records")):
            where = f"{path} row {row_number}"
            messages = plain(row[prompt_key])
            if isinstance(messages, str):
                messages = [{"role": "user", "content": messages}]
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
                raise EvalInputError(f"{where}: '{prompt_key}' must be a list of chat messages, got {messages!r:.200}")
            reward_model = plain(row["reward_model"])
            if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
                raise EvalInputError(
                    f"{where}: 'reward_model' must be a dict with 'ground_truth', got {reward_model!r:.200}"
                )
            extra_info = plain(row.get("extra_info")) or {}
            if not isinstance(extra_info, dict):
                extra_info = {}
            index = extra_info.get("index", row_number)
            data_source = str(row["data_source"])
            problem_id = f"{data_source}/{index}"
            if problem_id in seen:
                raise EvalInputError(
                    f"duplicate problem id {problem_id!r} ({seen[problem_id]} and {where}): "
                    "give every row of a data_source a unique extra_info.index"
                )
            seen[problem_id] = where
            problems.append(
                Problem(
                    problem_id=problem_id,
                    data_source=data_source,
                    index=index,
                    messages=messages,
                    ground_truth=reward_model["ground_truth"],
                    extra_info=extra_info,
                    source_file=str(path),
                )
            )
    return problems
