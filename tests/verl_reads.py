"""What the installed verl reads of its config, derived from its source (tests only: a scan of
every module takes seconds, so preflight works from the tables in maspo_verl/compat.py, and
tests/test_preflight_keys.py holds those tables to this scan).

Two questions, two scans of verl's Python source (and its YAML interpolations):

* `unread_fields(cls)`: the fields of a config dataclass that no code reads. A field counts as
  read when its name is read anywhere outside verl's config modules (an attribute load,
  `x["name"]`, `x.get("name")`, `getattr(x, "name")`, `"name" in x`, an `OmegaConf.select` path,
  a name in a literal list of names that verl forwards, a `${...}` interpolation in verl's YAML), or inside a method of the class itself or a parent
  (verl's aliases: `OptimizerConfig.__post_init__` copies the deprecated `grad_clip` into
  `clip_grad`). Name-level reads over-approximate, so a field found unread is read nowhere.
* `trainer_reads()`: the `trainer.*` keys verl's v1 trainer reads. `config.trainer` stays a
  DictConfig read by key (`config.trainer.x`, `config.trainer.get("x")`, `config["trainer"]["x"]`,
  `"trainer.x"` paths), so the scan looks for those reads in every module except the other entry
  points (LEGACY_OR_OTHER_ENTRY_POINTS), which a v1 run never executes.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import verl

ROOT = Path(verl.__file__).parent
CONFIG_MODULES = ("workers/config/", "trainer/config/", "base_config.py", "utils/profiler/config.py")
# modules a `python -m verl.trainer.main_ppo` run with trainer.use_v1=True never executes: the
# legacy trainer (RayPPOTrainer, main_ppo_v0), the experimental trainers and the other entry points
LEGACY_OR_OTHER_ENTRY_POINTS = (
    "experimental/",
    "trainer/ppo/ray_trainer.py",
    "trainer/main_ppo_v0.py",
    "trainer/sft_trainer",
    "trainer/main_generation_server.py",
    "trainer/main_eval.py",
)
INTERPOLATION = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z0-9_.]+)")


@functools.cache
def _modules() -> tuple:
    """(module path, AST) of every verl module, parsed once."""
    return tuple(
        (path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(ROOT.rglob("*.py"))
    )


def _strings(node) -> list[str]:
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def _names_read(node) -> list[str]:
    """The config key names one AST node reads."""
    if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        return [node.attr]
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
        return _strings(node.slice)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "select"):
            return [text.split(".")[-1] for arg in node.args[:2] for text in _strings(arg)]
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and len(node.args) > 1:
            return _strings(node.args[1])
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
        return _strings(node.left)
    return []


def _names_listed(node) -> list[str]:
    """Names in a literal tuple, list or set: verl forwards fields by such lists of names
    (utils/megatron/optimizer.py's _MUON_PASSTHROUGH_FIELDS)."""
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [text for item in node.elts for text in _strings(item) if text.isidentifier()]
    return []


@functools.cache
def _reads() -> tuple[frozenset, dict]:
    """(names read outside the config classes, {class name: names its own methods read via self})."""
    anywhere, by_class = set(), {}
    for name, tree in _modules():
        in_config = name.startswith(CONFIG_MODULES)
        owner = {}
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for inner in ast.walk(cls):
                owner.setdefault(id(inner), cls.name)
        for node in ast.walk(tree):
            names = _names_read(node) + ([] if in_config else _names_listed(node))
            via_self = isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
            if in_config and via_self and id(node) in owner:
                by_class.setdefault(owner[id(node)], set()).update(names)
            else:
                anywhere.update(names)
    for path in (ROOT / "trainer" / "config").rglob("*.yaml"):
        anywhere.update(match.split(".")[-1] for match in INTERPOLATION.findall(path.read_text(encoding="utf-8")))
    return frozenset(anywhere), by_class


def unread_fields(cls) -> set[str]:
    """The fields (defined in `cls` or its parents) that verl reads nowhere."""
    anywhere, by_class = _reads()
    own = set().union(*(by_class.get(base.__name__, set()) for base in cls.__mro__))
    return {f.name for f in fields(cls) if not f.name.startswith("_") and f.name not in anywhere | own}


def _config_name(node) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return "config" if isinstance(node, ast.Subscript) else ""


def _is_trainer_section(node) -> bool:
    """`<config>.trainer` or `<config>["trainer"]`, where <config> is named like a config."""
    if isinstance(node, ast.Attribute) and node.attr == "trainer":
        return any(word in _config_name(node.value).lower() for word in ("config", "cfg", "conf"))
    return isinstance(node, ast.Subscript) and _strings(node.slice) == ["trainer"]


@functools.cache
def trainer_reads() -> dict[str, set[str]]:
    """{trainer key: the verl modules on the v1 path that read it}."""
    found = {}
    for name, tree in _modules():
        if name.startswith(LEGACY_OR_OTHER_ENTRY_POINTS):
            continue
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Attribute) and _is_trainer_section(node.value) and node.attr not in ("get", "pop"):
                key = node.attr
            elif isinstance(node, ast.Subscript) and _is_trainer_section(node.value):
                key = next(iter(_strings(node.slice)), None)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("get", "pop")
                and _is_trainer_section(node.func.value)
                and node.args
            ):
                key = next(iter(_strings(node.args[0])), None)
            else:
                text = next(iter(_strings(node)), "")
                if re.fullmatch(r"trainer\.[a-z_0-9]+(\.[a-z_0-9]+)*", text):
                    key = text.split(".")[1]
            if key:
                found.setdefault(key, set()).add(name)
    return found


def dataclasses_in(node, found=None) -> dict[str, type]:
    """{class name: class} of every `_target_` dataclass in a config subtree."""
    from hydra.utils import get_class
    from omegaconf import DictConfig, ListConfig

    found = {} if found is None else found
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if isinstance(target, str) and target:
            cls = get_class(target)
            if is_dataclass(cls):
                found[cls.__name__] = cls
        for key in node:
            dataclasses_in(node._get_node(key), found)
    elif isinstance(node, ListConfig):
        for item in node:
            dataclasses_in(item, found)
    return found
