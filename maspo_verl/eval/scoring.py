"""Choosing and calling the scorer of each sample, by data_source.

* ``--reward-fn PATH:NAME`` (a file path or a dotted module, like verl's
  ``reward.custom_reward_function.path/name``) scores everything;
* else the kit's data sources (``maspo_kit/arith``, ``maspo_kit/chain``) use their task's scorer
  in ``maspo_verl/kit/reward.py``;
* else ``maspo_verl.rewards.compute_score`` (the project's math scorer, imported lazily).

Every scorer has verl's custom-reward signature
``compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs)`` and
returns a number or a dict with ``score`` (and optionally ``acc``, ``pred``).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Callable

from maspo_verl.data.templates import Scored
from maspo_verl.eval.data import EvalInputError

KIT_SCORERS = {
    "maspo_kit/arith": "maspo_verl.kit.reward:compute_score",
    "maspo_kit/chain": "maspo_verl.kit.reward:compute_chain_score",
}
MATH_SCORER = "maspo_verl.rewards:compute_score"


def load_function(spec: str) -> Callable:
    """``/path/to/file.py:name`` or ``package.module:name`` -> the function."""
    if ":" not in spec:
        raise EvalInputError(f"--reward-fn must be PATH:NAME or module:NAME, got {spec!r}")
    where, name = spec.rsplit(":", 1)
    if where.endswith(".py") or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise EvalInputError(f"reward function file not found: {path}")
        module_spec = importlib.util.spec_from_file_location(f"maspo_eval_reward_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise EvalInputError(f"cannot import reward file {path}: {exc!r}") from exc
    else:
        try:
            module = importlib.import_module(where)
        except Exception as exc:
            raise EvalInputError(f"cannot import the scorer module {where!r}: {exc!r}") from exc
    fn = getattr(module, name, None)
    if not callable(fn):
        raise EvalInputError(f"{where} has no function {name!r}")
    return fn


class Scorer:
    """Routes each sample to its scorer; resolve everything up front with ``resolve``."""

    def __init__(self, override: str | None = None):
        self.override = override
        self._cache: dict[str, Callable] = {}

    def spec_for(self, data_source: str) -> str:
        if self.override:
            return self.override
        return KIT_SCORERS.get(data_source, MATH_SCORER)

    def resolve(self, data_sources) -> dict[str, str]:
        """Import every scorer the data needs now, so a missing one fails before the model loads."""
        used = {}
        for data_source in sorted(set(data_sources)):
            spec = self.spec_for(data_source)
            if spec not in self._cache:
                try:
                    self._cache[spec] = load_function(spec)
                except EvalInputError as exc:
                    if spec == MATH_SCORER:
                        raise EvalInputError(
                            f"data_source {data_source!r} needs the project's math scorer ({MATH_SCORER}), which "
                            f"could not be loaded ({exc}); pass --reward-fn PATH:NAME to score with another function"
                        ) from exc
                    raise
            used[data_source] = spec
        return used

    def function(self, data_source: str) -> Callable:
        """The scorer of ``data_source``, with verl's custom-reward signature."""
        spec = self.spec_for(data_source)
        return self._cache.get(spec) or self._cache.setdefault(spec, load_function(spec))

    def __call__(self, data_source: str, response: str, ground_truth: Any, extra_info: dict | None) -> Scored:
        spec = self.spec_for(data_source)
        result = self.function(data_source)(
            data_source=data_source, solution_str=response, ground_truth=ground_truth, extra_info=extra_info
        )
        scored = Scored.of(result)
        score, acc, pred = scored.score, scored.acc, scored.pred
        if pred is None and spec == KIT_SCORERS["maspo_kit/arith"]:
            from maspo_verl.kit.reward import parse_answer

            pred = parse_answer(response)
        if pred is not None and not isinstance(pred, (str, int, float, bool)):
            pred = str(pred)
        return Scored(score=score, acc=acc, pred=pred)
