"""Turning ``--model`` into a Hugging Face model directory.

Accepted: a Hugging Face model directory (``config.json`` and weights), or a verl checkpoint
(the ``default_local_dir`` with ``latest_checkpointed_iteration.txt``, a ``global_step_N``
directory, or its ``actor`` directory). A checkpoint is merged to HF weights with verl's own
merger (``python -m verl.model_merger merge --backend fsdp``) once; the result is cached under
``--merge-cache`` (default ``$MASPO_VERL_CACHE/merged`` or ``~/.cache/maspo_verl/merged``),
keyed by the checkpoint's location and shard files, and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from maspo_verl.eval.data import EvalInputError

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.safetensors.index.json", "*.bin.index.json")
_SHARD = re.compile(r"model_world_size_(\d+)_rank_(\d+)\.pt")
MERGED_MARKER = "maspo_merged_from.json"


@dataclass(frozen=True)
class ResolvedModel:
    hf_dir: Path
    source: Path
    kind: str  # "hf" or "verl-checkpoint"
    actor_dir: Path | None = None  # for checkpoints

    def describe(self) -> str:
        if self.kind == "hf":
            return str(self.hf_dir)
        return f"{self.actor_dir} (verl checkpoint, merged into {self.hf_dir})"


def _has_weights(directory: Path) -> bool:
    return any(any(directory.glob(p)) for p in WEIGHT_PATTERNS if not p.endswith(".pt"))


def _actor_dir(path: Path) -> Path | None:
    """The checkpoint's actor directory if ``path`` looks like a verl checkpoint, else None."""
    marker = path / "latest_checkpointed_iteration.txt"
    if marker.is_file():
        step = marker.read_text().strip()
        path = path / f"global_step_{step}"
        if not path.is_dir():
            raise EvalInputError(f"{marker} points at step {step}, but {path} does not exist")
    if path.name.startswith("global_step_") and (path / "actor").is_dir():
        path = path / "actor"
    if (
        (path / "fsdp_config.json").is_file()
        or any(path.glob("model_world_size_*_rank_*.pt"))
        or (path / "huggingface").is_dir()
    ):
        return path
    return None


def _check_actor_dir(actor: Path) -> str:
    """Validate a checkpoint's actor directory; return the merger backend."""
    if (actor / "dist_ckpt").is_dir():
        return "megatron"
    shards = {}
    for file in actor.glob("model_world_size_*_rank_*.pt"):
        world, rank = map(int, _SHARD.fullmatch(file.name).groups())
        shards.setdefault(world, set()).add(rank)
    if not shards:
        raise EvalInputError(
            f"verl checkpoint {actor} has no model weights (no model_world_size_*_rank_*.pt shards): was it saved "
            "with checkpoint contents including 'model'?"
        )
    world, ranks = max(shards.items())
    if ranks != set(range(world)):
        raise EvalInputError(f"verl checkpoint {actor} is incomplete: shards of ranks {sorted(ranks)} of {world}")
    if not (actor / "huggingface" / "config.json").is_file():
        raise EvalInputError(f"verl checkpoint {actor} lacks huggingface/config.json, which the merger needs")
    return "fsdp"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """Size plus a hash of the first and last MiB: cheap, content-based, robust to moving the file."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > 2 * chunk:
            f.seek(-chunk, os.SEEK_END)
            h.update(f.read(chunk))
    return h.hexdigest()[:16]


def model_fingerprint(hf_dir: Path) -> str:
    """Identity of a model directory's config and weights (not of its location)."""
    parts = []
    for name in ("config.json",):
        if (hf_dir / name).is_file():
            parts.append((name, hashlib.sha256((hf_dir / name).read_bytes()).hexdigest()[:16]))
    for pattern in WEIGHT_PATTERNS:
        for file in sorted(hf_dir.glob(pattern)):
            parts.append((file.name, file_digest(file)))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def default_merge_cache() -> Path:
    root = os.environ.get("MASPO_VERL_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "maspo_verl") / "merged"


def check_model(path) -> tuple[Path, Path | None, str | None]:
    """Validate ``--model`` without loading anything: (path, actor_dir or None, merger backend or None)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise EvalInputError(f"model path not found: {path}")
    path = path.resolve()
    if not path.is_dir():
        raise EvalInputError(
            f"--model must be a directory (Hugging Face model or verl checkpoint), got the file {path}"
        )
    if (path / "config.json").is_file():
        if not _has_weights(path):
            raise EvalInputError(f"{path} has a config.json but no weights (*.safetensors / *.bin)")
        return path, None, None
    actor = _actor_dir(path)
    if actor is None:
        raise EvalInputError(
            f"{path} is neither a Hugging Face model directory (config.json + weights) nor a verl checkpoint "
            "(latest_checkpointed_iteration.txt, global_step_N/ or global_step_N/actor/)"
        )
    return path, actor, _check_actor_dir(actor)


def resolve_model(path, merge_cache: Path | None = None, log=print) -> ResolvedModel:
    """Return the HF directory to load, merging a verl checkpoint (cached) when needed."""
    path, actor, backend = check_model(path)
    if actor is None:
        return ResolvedModel(hf_dir=path, source=path, kind="hf")
    shards = sorted((f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in actor.glob("model_world_size_*"))
    key = hashlib.sha256(json.dumps([str(actor), shards]).encode()).hexdigest()[:16]
    cache = Path(merge_cache or default_merge_cache()).expanduser()
    target = cache / f"{actor.parent.name}-{key}"
    if (target / MERGED_MARKER).is_file():
        log(f"using the cached merge of {actor}: {target}")
        return ResolvedModel(hf_dir=target, source=path, kind="verl-checkpoint", actor_dir=actor)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "verl.model_merger", "merge", f"--backend={backend}",
               f"--local_dir={actor}", f"--target_dir={partial}"]  # fmt: skip
    log(f"merging {actor} with verl's model merger into {target}")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
        raise RuntimeError(f"verl's model merger failed ({' '.join(command)}):\n{tail}")
    (partial / MERGED_MARKER).write_text(json.dumps({"actor_dir": str(actor), "shards": shards, "backend": backend}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return ResolvedModel(hf_dir=target, source=path, kind="verl-checkpoint", actor_dir=actor)
