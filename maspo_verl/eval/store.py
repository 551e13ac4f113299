"""The per-sample JSONL store with a settings fingerprint, for resuming without mixing settings.

``<out>/settings.json`` holds the generation settings and their fingerprint; every line of
``<out>/samples.jsonl`` is one sample keyed by (problem_id, sample) and carries the fingerprint
too. A run whose settings differ is refused; a line cut off by an interruption is dropped.

The settings are ``FINGERPRINT_FIELDS``. Records written before a field existed lack it: they
are read with the field ``"unknown"`` (``with_unknowns``), so they never match a record that
knows it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from maspo_verl.eval.data import EvalInputError

SETTINGS_FILE = "settings.json"
SAMPLES_FILE = "samples.jsonl"
UNKNOWN = "unknown"
FINGERPRINT_FIELDS = (
    "model_fingerprint",  # content hash of the model's config and weights
    "backend",  # the rollout engine: vllm or hf
    "engine_version",  # "vllm X" or "transformers X / torch Y" (the hf engine)
    "dtype",
    "tensor_parallel_size",
    "temperature",
    "top_p",
    "top_k",
    "max_response_length",
    "chat_template_sha256",  # of the tokenizer's chat template ("none" without one)
    "chat_template_kwargs",
    "prompt_template",  # the name `prepare` recorded in the data (extra_info.template)
    "data_sha256",  # {data_source: sha256 of the bytes of the file holding it}
    "seed",
)
PER_BENCHMARK_FIELDS = ("data_sha256",)  # keyed by data_source: a benchmark's own, not the run's


def fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def with_unknowns(generation: dict) -> dict:
    """A stored record's settings with every fingerprint field present (older records lack some)."""
    return {**{name: UNKNOWN for name in FINGERPRINT_FIELDS}, **generation}


def settings_diff(first: dict, second: dict, names: tuple[str, str] = ("stored", "now")) -> list[str]:
    """``"field: stored X, now Y"`` for every field that differs; dict fields compared key by key."""
    out = []
    for key in sorted(set(first) | set(second)):
        a, b = first.get(key, UNKNOWN), second.get(key, UNKNOWN)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{line}" for line in settings_diff(a, b, names)]
        else:
            out.append(f"{key}: {names[0]} {a!r}, {names[1]} {b!r}")
    return out


class SampleStore:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.settings_path = self.out_dir / SETTINGS_FILE
        self.samples_path = self.out_dir / SAMPLES_FILE
        self.records: dict[tuple[str, int], dict] = {}
        self.fingerprint: str | None = None  # set by open()
        self._fp = None

    def open(self, generation: dict, extra: dict | None = None) -> str:
        """Check (or write) the settings; load the finished samples; return the fingerprint."""
        self.fingerprint = fingerprint(generation)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.settings_path.is_file():
            stored = json.loads(self.settings_path.read_text())
            if stored.get("fingerprint") != self.fingerprint:
                diffs = settings_diff(with_unknowns(stored.get("generation", {})), generation)
                raise EvalInputError(
                    f"refusing to mix samples generated under different settings in {self.out_dir} "
                    f"({'; '.join(diffs) or 'fingerprint differs'}); use another --out directory or delete this one"
                )
        self.settings_path.write_text(
            json.dumps({"fingerprint": self.fingerprint, "generation": generation, **(extra or {})}, indent=2)
        )
        self._load()
        return self.fingerprint

    def _load(self) -> None:
        if not self.samples_path.is_file():
            return
        raw = self.samples_path.read_bytes()
        good_end = raw.rfind(b"\n") + 1
        if good_end < len(raw):  # an interrupted write: keep only complete lines
            with open(self.samples_path, "r+b") as f:
                f.truncate(good_end)
        for number, line in enumerate(raw[:good_end].decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalInputError(
                    f"{self.samples_path} line {number} is not JSON ({exc}); remove it to resume"
                ) from exc
            if record.get("fingerprint") != self.fingerprint:
                raise EvalInputError(
                    f"{self.samples_path} line {number} was generated under other settings (fingerprint "
                    f"{record.get('fingerprint')} vs {self.fingerprint}); refusing to mix them"
                )
            self.records.setdefault((record["problem_id"], int(record["sample"])), record)

    def append(self, record: dict) -> None:
        record = {**record, "fingerprint": self.fingerprint}
        if self._fp is None:
            self._fp = open(self.samples_path, "a", encoding="utf-8")
        self._fp.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fp.flush()
        self.records[(record["problem_id"], int(record["sample"]))] = record

    def rewrite(self) -> None:
        """Write every record again (after re-scoring), atomically."""
        self.close()
        tmp = self.samples_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for key in sorted(self.records, key=lambda k: (k[0], k[1])):
                f.write(json.dumps(self.records[key], ensure_ascii=False) + "\n")
        os.replace(tmp, self.samples_path)

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None
