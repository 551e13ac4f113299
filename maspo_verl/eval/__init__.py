"""Score a checkpoint the way the paper does: Avg@k and unbiased Pass@k per benchmark.

``python -m maspo_verl.eval --help``; see docs/evaluation.md. Importing this package loads
neither verl nor torch; ``evaluate`` does.
"""

from maspo_verl.eval.data import EvalInputError
from maspo_verl.eval.estimators import avg_at_k, bootstrap_ci, k_ladder, pass_at_k, summarize_correctness


def evaluate(config, log=print):
    from maspo_verl.eval.runner import evaluate as _evaluate

    return _evaluate(config, log=log)


def __getattr__(name):
    if name == "EvalConfig":
        from maspo_verl.eval.runner import EvalConfig

        return EvalConfig
    raise AttributeError(name)


__all__ = ["EvalConfig", "EvalInputError", "avg_at_k", "bootstrap_ci", "evaluate", "k_ladder", "pass_at_k",
           "summarize_correctness"]  # fmt: skip
