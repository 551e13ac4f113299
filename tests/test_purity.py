"""The package's structure: the pure math module does not pull verl in (it is meant to be read,
tested and reused alone), and no import runs back up the layers or round in a circle.

The layering is checked on every import statement of maspo_verl/, at module level and inside
functions alike (a function-level import is how a circle hides: nothing fails at import time).
Each statement counts for the module it names (`from .x import y` names `x`, or `x.y` when that
is a module); dynamic imports (importlib, Hydra `_target_` strings) are not statements and are
not checked.
"""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NO_VERL = (
    "assert not any(m == 'verl' or m.startswith('verl.') for m in sys.modules), "
    "sorted(m for m in sys.modules if m.split('.')[0] == 'verl')"
)

# Bottom first. A module may import from its own layer or a lower one, never from a higher one.
# An entry names a module or a package (and then everything in it); the longest entry that
# matches a module places it, and every module of the package must be placed. The package
# itself (`maspo_verl`, whose `register()` loads everything) matches only its own __init__.
LAYERS = [
    ("pure: nothing of verl's or ours above it",
     ["maspo_verl.algos", "maspo_verl.padding", "maspo_verl.dp_sync", "maspo_verl.refusal",
      "maspo_verl.loss_metrics"]),
    ("verl's internals, the advantage shapers, the CPU platform",
     ["maspo_verl.compat", "maspo_verl.shaping", "maspo_verl.cpu_platform"]),
    ("the one adapter: the ppo_loss hook, the loss functions, their config classes",
     ["maspo_verl.hook", "maspo_verl.losses", "maspo_verl.config"]),
    ("data, the math reward, the tiny kit, the hf rollout",
     ["maspo_verl.data", "maspo_verl.rewards", "maspo_verl.kit", "maspo_verl.rollout"]),
    ("registration with verl", ["maspo_verl", "maspo_verl.registration", "maspo_verl.verl_plugin"]),
    ("the checks before Ray", ["maspo_verl.preflight"]),
    ("commands: the trainer's entry, evaluation, report, the reward audit",
     ["maspo_verl.main_ppo", "maspo_verl.eval", "maspo_verl.report", "maspo_verl.rewards.audit",
      "maspo_verl.rewards.audit_set", "maspo_verl.rewards.__main__"]),
    ("launchers of verl runs", ["maspo_verl.launch", "maspo_verl.quickstart"]),
    ("the benchmark", ["maspo_verl.bench"]),
]  # fmt: skip


def _run(code: str) -> subprocess.CompletedProcess:
    # run from the repository root, so this checkout's maspo_verl is the one imported
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("module", ["maspo_verl.algos.maspo", "maspo_verl.algos"])
def test_pure_math_does_not_import_verl(module):
    res = _run(f"import {module}, sys; {NO_VERL}")
    assert res.returncode == 0, res.stderr


def test_purity_check_is_not_vacuous():
    # verl is importable here, so a stray `import verl` in the math module would be seen ...
    assert importlib.util.find_spec("verl") is not None
    # ... and the assertion fires when a verl module is loaded.
    res = _run(f"import sys, types; sys.modules['verl.utils'] = types.ModuleType('verl.utils'); {NO_VERL}")
    assert res.returncode != 0 and "verl.utils" in res.stderr


# ----------------------------------------------------------------------------- layers and circles


def package_imports(root: Path, package: str = "maspo_verl") -> dict[str, dict[str, int]]:
    """{module: {imported module of the package: line}} from every import statement, at any depth."""
    files = {}
    for path in (root / package).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    imports = {}
    for module, path in files.items():
        here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        found = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]) if node.level else node.module
                base = base.rstrip(".")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == package and target != module:
                    found.setdefault(target, node.lineno)
        imports[module] = found
    return imports


def layer_of(module: str, layers=LAYERS) -> int | None:
    best = None
    for index, (_, entries) in enumerate(layers):
        for entry in entries:
            root_only = "." not in entry
            if module == entry or (not root_only and module.startswith(entry + ".")):
                if best is None or len(entry) > len(best[1]):
                    best = (index, entry)
    return None if best is None else best[0]


def layering_problems(imports: dict, layers=LAYERS) -> list[str]:
    problems = [f"{module} is in no layer of LAYERS" for module in imports if layer_of(module, layers) is None]
    for module, targets in imports.items():
        for target, line in targets.items():
            low, high = layer_of(target, layers), layer_of(module, layers)
            if None not in (low, high) and low > high:
                problems.append(
                    f"{module}:{line} imports {target}, a higher layer ({layers[low][0]!r} above {layers[high][0]!r})"
                )
    return problems


def circles(imports: dict) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in imports.get(module, {}):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_no_import_runs_up_a_layer():
    assert layering_problems(package_imports(ROOT)) == []


def test_no_imports_go_round_in_a_circle():
    assert circles(package_imports(ROOT)) == []


def test_the_checks_see_function_level_imports_and_circles(tmp_path):
    """A lower module importing a higher one inside a function, and a circle through it, are found."""
    package = tmp_path / "maspo_verl"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("from . import base\n")
    (package / "low" / "base.py").write_text("def late():\n    from ..high import feature\n    return feature\n")
    (package / "high.py").write_text("from maspo_verl.low.base import late\n\ndef feature():\n    return late\n")
    layers = [("low", ["maspo_verl.low"]), ("high", ["maspo_verl.high", "maspo_verl"])]
    imports = package_imports(tmp_path)
    assert imports["maspo_verl.low"] == {"maspo_verl.low.base": 1}
    assert imports["maspo_verl.low.base"] == {"maspo_verl.high": 2}
    (problem,) = layering_problems(imports, layers)
    assert problem.startswith("maspo_verl.low.base:2 imports maspo_verl.high, a higher layer")
    assert circles(imports) == [["maspo_verl.high", "maspo_verl.low.base"]]
    # the package root places itself only, and a module no entry places is named
    assert layer_of("maspo_verl", layers) == 1
    assert layering_problems({"maspo_verl.elsewhere": {}}, layers) == ["maspo_verl.elsewhere is in no layer of LAYERS"]


def test_every_module_of_the_package_is_placed_once_and_layers_name_real_modules():
    imports = package_imports(ROOT)
    entries = [entry for _, names in LAYERS for entry in names]
    assert len(entries) == len(set(entries))
    assert all(entry in imports for entry in entries), sorted(set(entries) - set(imports))
