"""Estimators for sampled evaluation: Avg@k, unbiased Pass@k and a confidence interval for Avg@k.

Pure numpy; no verl, no torch. Conventions (see docs/evaluation.md):

* ``Avg@k`` = mean over problems of (correct samples / k), the first k samples of each problem.
  This is verl's validation ``mean@N`` of the ``acc`` value when N = k.
* ``Pass@k`` (k <= n samples per problem) is the unbiased estimator of Chen et al. (2021),
  ``1 - C(n-c, k) / C(n, k)``, averaged over problems. It uses all n samples of a problem, so
  Pass@1 equals Avg@n. verl's ``best@N`` is a bootstrap with replacement, a different quantity.
* The confidence interval of Avg@k is a percentile bootstrap over problems: problems are
  resampled with replacement, each with its own per-problem accuracy, and Avg@k recomputed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

DEFAULT_BOOTSTRAP = 10_000
DEFAULT_CONFIDENCE = 0.95


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased probability that at least one of k samples drawn without replacement from n
    samples, c of them correct, is correct. Numerically stable product form."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    i = np.arange(n - c + 1, n + 1, dtype=np.float64)
    return float(1.0 - np.prod(1.0 - k / i))


def pass_at_k_exact(n: int, c: int, k: int) -> float:
    """The same quantity with exact binomial coefficients (for tests and small n)."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def k_ladder(k_max: int) -> list[int]:
    """1, 2, 4, ... up to k_max, with k_max itself always last."""
    if k_max < 1:
        raise ValueError(f"k must be >= 1, got {k_max}")
    ladder, k = [], 1
    while k < k_max:
        ladder.append(k)
        k *= 2
    ladder.append(k_max)
    return ladder


def avg_at_k(per_problem_acc: Sequence[Sequence[float]]) -> float:
    """Mean over problems of the mean of their sample accuracies."""
    if len(per_problem_acc) == 0:
        raise ValueError("no problems")
    return float(np.mean([np.mean(acc) for acc in per_problem_acc]))


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one value per problem)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no values")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    means = values[idx].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def normal_ci(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Normal-approximation interval of the mean (mean +- z * standard error), for reference."""
    from statistics import NormalDist

    values = np.asarray(values, dtype=np.float64)
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    se = values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else 0.0
    mean = float(values.mean())
    return mean - z * se, mean + z * se


def summarize_correctness(
    correct: Sequence[Sequence[bool]],
    acc: Sequence[Sequence[float]] | None = None,
    k: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> dict:
    """Avg@k, its CI, and Pass@j for j in 1, 2, 4, ..., k for one benchmark.

    ``correct[p]`` holds the 0/1 outcome of each sample of problem p, in sample order; ``acc``
    (defaults to ``correct``) the value Avg@k averages. Only the first k samples count.
    """
    if acc is None:
        acc = correct
    sizes = {len(c) for c in correct}
    n = min(sizes) if sizes else 0
    k = n if k is None else k
    if k < 1 or n < k:
        raise ValueError(f"every problem needs at least k={k} samples; the smallest has {n}")
    outcomes = np.array([[bool(x) for x in c[:k]] for c in correct], dtype=bool)
    per_problem = np.array([np.mean(a[:k]) for a in acc], dtype=np.float64)
    counts = outcomes.sum(axis=1)
    low, high = bootstrap_ci(per_problem, confidence, n_boot, seed)
    return {
        "k": k,
        "num_problems": int(outcomes.shape[0]),
        "avg_at_k": float(per_problem.mean()),
        "avg_at_k_ci": [low, high],
        "avg_at_k_ci_normal": list(normal_ci(per_problem, confidence)),
        "pass_at_k": {str(j): float(np.mean([pass_at_k(k, int(c), j) for c in counts])) for j in k_ladder(k)},
    }
