"""Reading verl's own training logs: the file logger's JSONL and TensorBoard event files."""

from __future__ import annotations

import json
import math
from pathlib import Path

from maspo_verl.report.table import ReportInputError

Series = dict[str, dict[int, float]]  # metric -> {step: value}


def _numeric(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_jsonl(path: Path) -> Series:
    """verl's FileLogger: one ``{"step": N, "data": {metric: value}}`` per line; a later line for
    the same step (a resumed run) wins; a cut-off last line is ignored."""
    series: Series = {}
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise ReportInputError(f"{path} line {number} is not JSON") from exc
        if not isinstance(record, dict) or "step" not in record or not isinstance(record.get("data"), dict):
            raise ReportInputError(f"{path} line {number} is not verl file-logger format ({{'step', 'data'}})")
        for key, value in record["data"].items():
            value = _numeric(value)
            if value is not None:
                series.setdefault(key, {})[int(record["step"])] = value
    return series


def read_tensorboard(path: Path) -> Series:
    """Scalars of every event file under ``path`` (verl's tensorboard logger: one tag per metric)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = [path] if path.is_file() else sorted(path.rglob("events.out.tfevents.*"))
    series: Series = {}
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                value = _numeric(event.value)
                if value is not None:
                    series.setdefault(tag, {})[int(event.step)] = value
    return series


def read_run(path) -> Series:
    path = Path(path).expanduser()
    if not path.exists():
        raise ReportInputError(f"training log not found: {path}")
    if path.is_file():
        if path.name.startswith("events.out.tfevents"):
            return read_tensorboard(path)
        return read_jsonl(path)
    if any(path.rglob("events.out.tfevents.*")):
        return read_tensorboard(path)
    jsonl = sorted(path.glob("*.jsonl"))
    if len(jsonl) == 1:
        return read_jsonl(jsonl[0])
    raise ReportInputError(
        f"{path}: expected a verl file-logger .jsonl, a TensorBoard event file, or a directory with event files "
        f"or exactly one .jsonl (found {len(jsonl)} .jsonl files)"
    )
