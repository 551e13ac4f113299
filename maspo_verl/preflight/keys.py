"""Settings the installed verl would silently ignore, refused before Ray starts.

verl builds the actor, rollout and ref sections of its config into config dataclasses (each
node's `_target_`) and reads `trainer` as a DictConfig, key by key. Two kinds of setting there
change nothing, without an error:

* a key verl does not know at all, typically added with `+` (`+actor_rollout_ref.actor.foo=1`)
  or under `trainer` (`trainer.foo` is never read); the refusal names the closest key verl reads;
* a key verl knows but reads nowhere, set to something other than verl's default: a field of a
  config dataclass that no code reads (`actor_rollout_ref.actor.grad_clip`: verl 0.9.1 clips
  with `actor.optim.clip_grad`), or a `trainer` key only verl's legacy trainer reads
  (`trainer.balance_batch`); the refusal names the key verl does read, where it has one.

What verl knows comes from its own config dataclasses (the fields of each `_target_`) and its
composed default config (the `trainer` keys, and the defaults an unread key is compared with);
what it reads nowhere, and its aliases, from the tables in `maspo_verl/compat.py`, which
`tests/test_preflight_keys.py` derives from verl's source. Mappings that verl passes on whole
(`engine_kwargs`, `override_config`, `sampler_kwargs`, ...) are not looked into.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing

from omegaconf import DictConfig, ListConfig, OmegaConf

from .. import compat

SECTIONS = ("actor_rollout_ref.actor", "actor_rollout_ref.rollout", "actor_rollout_ref.ref", "trainer")
REF_SECTION = "actor_rollout_ref.ref"


@functools.cache
def config_class(target) -> type | None:
    """The dataclass a node's `_target_` names (None when it names none, or none that imports)."""
    if not isinstance(target, str) or not target:
        return None
    from hydra.utils import get_class

    try:
        cls = get_class(target)
    except Exception:  # an unimportable `_target_` fails loudly in verl's own instantiate
        return None
    return cls if dataclasses.is_dataclass(cls) else None


@functools.cache
def _field_classes(cls) -> dict[str, type]:
    """{field: its dataclass type} for the fields of `cls` typed with a dataclass (Optional too)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        return {}
    found = {}
    for name, hint in hints.items():
        declared = next((option for option in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(option)), None)
        if declared is not None:
            found[name] = declared
    return found


@functools.cache
def unread_fields(cls) -> dict[str, str | None]:
    """{field verl reads nowhere: the key it reads instead, or None} for a config dataclass."""
    unread = {}
    for base in reversed(cls.__mro__):
        unread.update(compat.UNREAD_CONFIG_FIELDS.get(base.__name__, {}))
    return unread


def _raw(node: DictConfig, key):
    """The value as written (interpolations unresolved: a kit's `${maspo_kit:...}` builds the kit)."""
    value = node._get_node(key)
    return (
        OmegaConf.to_container(value, resolve=False) if isinstance(value, (DictConfig, ListConfig)) else value._value()
    )


def _without_targets(value):
    if isinstance(value, dict):
        return {key: _without_targets(item) for key, item in value.items() if key != "_target_"}
    return value


def _dataclass_default(cls, name):
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return field.default


def _unchanged(node, key, default_node, cls) -> bool:
    """Whether a key is at verl's default: its composed default where verl's YAML has the key,
    else the dataclass field's default."""
    if isinstance(default_node, DictConfig) and key in default_node:
        default = _raw(default_node, key)
    elif cls is not None:
        default = _dataclass_default(cls, key)
    else:
        return False
    return _without_targets(_raw(node, key)) == _without_targets(default)


def _instead(path: str, instead: str | None) -> str:
    if instead is None:
        return "; verl has no other key for it: remove it"
    if instead.startswith(("actor_rollout_ref.", "trainer.")) or " " in instead:
        return f"; instead, {instead}" if " " in instead else f"; set {instead} instead"
    return f"; set {path}.{instead} instead"


def _check_node(node: DictConfig, path: str, default_node, cls) -> list[str]:
    """The ignored keys of one node and, recursively, of its children (`cls`: the dataclass its
    parent's field declares, if any)."""
    cls = config_class(node.get("_target_")) or cls  # the node's own `_target_` first: a subclass of the field's type
    if cls is not None:
        known = {f.name for f in dataclasses.fields(cls)}
        if path == REF_SECTION:
            known |= set(compat.REF_RENAMED_KEYS)
        unread = unread_fields(cls)
    elif isinstance(default_node, DictConfig) and len(default_node):
        known = set(default_node)
        unread = compat.UNREAD_TRAINER_KEYS if path == "trainer" else {}
        if path == "trainer":
            known |= set(compat.TRAINER_KEYS_BEYOND_YAML)
    else:
        return []  # a mapping verl passes on whole
    problems = []
    readable = sorted(key for key in known - set(unread) if not key.startswith("_"))
    for key in node:
        setting = f"{path}.{key}={_raw(node, key)!r}"
        if key not in known:
            close = difflib.get_close_matches(str(key), readable, n=1)
            hint = f"did you mean {path}.{close[0]}? " if close else ""
            problems.append(
                f"{setting}: verl {compat.verl_version()} has no such key, so it would be ignored; {hint}"
                f"the keys verl reads at {path}: {', '.join(readable)}"
            )
        elif key in unread:
            if not _unchanged(node, key, default_node, cls):
                problems.append(
                    f"{setting}: verl {compat.verl_version()} reads {path}.{key} nowhere, so the run would "
                    f"ignore it{_instead(path, unread[key])}"
                )
        elif isinstance(node._get_node(key), DictConfig):
            child_default = default_node.get(key) if isinstance(default_node, DictConfig) else None
            child_cls = _field_classes(cls).get(key) if cls is not None else None
            problems += _check_node(node[key], f"{path}.{key}", child_default, child_cls)
    return problems


def ignored_keys(config) -> list[str]:
    """One line per setting of the actor, rollout, ref and trainer sections that verl would ignore."""
    defaults = compat.verl_default_config()
    problems = []
    for section in SECTIONS:
        node = OmegaConf.select(config, section)
        if isinstance(node, DictConfig):
            problems += _check_node(node, section, OmegaConf.select(defaults, section), None)
    return problems


def check_ignored_keys(config) -> None:
    """Refuse, naming each one, the settings verl would silently ignore."""
    problems = ignored_keys(config)
    if problems:
        raise ValueError(
            f"{len(problems)} setting(s) that the installed verl would silently ignore:\n  - " + "\n  - ".join(problems)
        )


def keys_step(config, found: dict, dry_run: bool) -> dict:
    check_ignored_keys(config)
    return {}
