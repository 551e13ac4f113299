"""The statistics a comparison of RL runs needs, from scipy.stats, as the field has settled them
(Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice", the rliable library):

- `paired_t` (`scipy.stats.ttest_1samp`): the paired comparison of two presets on common seeds,
  its two-sided p-value and t confidence interval at any level.
- `holm` and `holm_levels`: Holm's step-down correction over a family of comparisons (scipy has
  no Holm; `false_discovery_control` is Benjamini-Hochberg's, which bounds the false discovery
  rate, not the chance of any false finding). A comparison is significant at level alpha when its
  Holm-adjusted p-value is below alpha; the interval that matches that decision is the t interval
  at the level Holm tests it at, 1 - alpha / (m - k + 1) for the comparison with the k-th
  smallest p-value of m: it excludes 0 exactly when the raw p-value is below alpha / (m - k + 1).
- `minimal_detectable_difference`: the smallest true difference the seeds resolve (5% two-sided
  test, 80% power): a design figure for choosing the number of seeds, not a threshold.
- `iqm`: the interquartile mean, the mean of the middle 50% of the runs (`scipy.stats.trim_mean`
  with 25% cut from each end): robust to one outlier seed, less noisy than the median.
- `stratified_bootstrap_ci`: a percentile bootstrap that resamples each stratum independently
  (`scipy.stats.bootstrap` with one sample per stratum): the IQM's runs, or the two presets' runs
  of a probability of improvement. None (with the reason) below MIN_BOOTSTRAP_RUNS runs per
  stratum, where its intervals are too short, and when every resample gives the same value (for
  instance P(improves) 0 on each: every run of one preset below every run of the other).
- `probability_of_improvement`: P(X > Y) for a run X of one preset and a run Y of another on the
  same regime (ties count half), the Mann-Whitney U statistic over n*m, averaged over strata.

rliable itself does not install beside verl's stack (with pandas 3 its `arch<8` dependency fails at
import, and arch 8 breaks its bootstrap), so these are computed here; tests/test_bench_stats.py
checks each against an independent computation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05  # (1 - CONFIDENCE in floating point is 0.05000000000000004)
POWER = 0.80
RESAMPLES = 2000
# The fewest runs per stratum a percentile bootstrap interval is given for. Measured coverage of the
# nominal 95% interval of the IQM (400 simulated samples each, normal / log-normal runs): 3 runs
# 0.77 / 0.72, 4 runs 0.89 / 0.90, 5 runs 0.90 / 0.92, 6 runs 0.93 / 0.90, 8 runs 0.94 / 0.91,
# 10 runs 0.95 / 0.93 (docs/mini-benchmark.md).
MIN_BOOTSTRAP_RUNS = 6


def iqm(values) -> float:
    """The interquartile mean (25% trimmed from each end)."""
    return float(_iqm(np.asarray(values, dtype=float)))


def _iqm(values, axis=-1):
    return stats.trim_mean(values, 0.25, axis=axis)


class Interval(NamedTuple):
    """A bootstrap interval, or None bounds with the reason there is none."""

    low: float | None
    high: float | None
    note: str = ""  # why there is none: too few runs, or every resample gives the same value


def stratified_bootstrap_ci(strata: list, statistic, confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Percentile CI of `statistic(*strata, axis=-1)`, resampling each stratum's values with
    replacement independently of the others; none below MIN_BOOTSTRAP_RUNS values in a stratum.
    `statistic` is vectorized: it reduces the last axis of each resampled stratum."""
    strata = [np.asarray(values, dtype=float) for values in strata]
    fewest = min(len(values) for values in strata)
    if fewest < MIN_BOOTSTRAP_RUNS:
        return Interval(None, None, f"{fewest} run{'s' * (fewest != 1)}: too few for a bootstrap interval "
                                    f"(needs {MIN_BOOTSTRAP_RUNS})")  # fmt: skip
    result = stats.bootstrap(tuple(strata), statistic, n_resamples=RESAMPLES, confidence_level=confidence,
                             method="percentile", vectorized=True, random_state=seed)  # fmt: skip
    if np.ptp(result.bootstrap_distribution) == 0:  # e.g. every run of one preset below every run of the other
        return Interval(None, None, f"no interval: every resample gives {result.bootstrap_distribution[0]:.3g}")
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high))


def probability_of_improvement(pairs: list) -> float:
    """Mean over strata of P(X > Y) + P(X == Y) / 2, for pairs = [(x_values, y_values), ...]."""
    return float(_improvement(*[np.asarray(values, dtype=float) for pair in pairs for values in pair]))


def _improvement(*samples, axis=-1):
    """`probability_of_improvement` of samples (x1, y1, x2, y2, ...), over their last axis."""
    pairs = zip(samples[0::2], samples[1::2])
    return np.mean([stats.mannwhitneyu(x, y, axis=axis).statistic / (x.shape[axis] * y.shape[axis]) for x, y in pairs],
                   axis=0)  # fmt: skip


def probability_of_improvement_ci(pairs: list, confidence: float = CONFIDENCE, seed: int = 0) -> tuple:
    """Point estimate and stratified bootstrap `Interval` of `probability_of_improvement`."""
    flat = [values for pair in pairs for values in pair]
    return probability_of_improvement(pairs), stratified_bootstrap_ci(flat, _improvement, confidence, seed)


def iqm_ci(values, confidence: float = CONFIDENCE, seed: int = 0) -> tuple:
    """The IQM of one regime's runs and its bootstrap `Interval`."""
    return iqm(values), stratified_bootstrap_ci([values], _iqm, confidence, seed)


class PairedT(NamedTuple):
    """The paired t-test of differences against 0: mean, two-sided p-value, interval."""

    mean: float | None
    p: float | None
    low: float | None
    high: float | None


def paired_t(differences, confidence: float = CONFIDENCE) -> PairedT:
    """`scipy.stats.ttest_1samp` of the paired differences against 0, with its t interval at
    `confidence`. Fewer than 2 differences: no test. Differences that are all equal have no
    spread: p is 1 if they are 0, else 0, and the interval is the value itself."""
    values = np.asarray(differences, dtype=float)
    if len(values) < 2:
        return PairedT(float(values.mean()) if len(values) else None, None, None, None)
    mean = float(values.mean())
    if np.ptp(values) == 0:
        return PairedT(mean, 1.0 if mean == 0 else 0.0, mean, mean)
    test = stats.ttest_1samp(values, 0.0)
    interval = test.confidence_interval(confidence_level=confidence)
    return PairedT(mean, float(test.pvalue), float(interval.low), float(interval.high))


def holm(p_values: list) -> list:
    """Holm's step-down adjusted p-values, in the order given: with the p-values sorted ascending,
    p_(k) * (m - k + 1), made non-decreasing along that order, at most 1."""
    m = len(p_values)
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm_levels(p_values: list, alpha: float = ALPHA) -> list:
    """The confidence level Holm tests each comparison at, in the order given: 1 - alpha / (m - k + 1)
    for the comparison with the k-th smallest p-value (ties in the order given)."""
    m = len(p_values)
    levels = [0.0] * m
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        levels[index] = 1 - alpha / (m - rank)
    return levels


def pooled_sd(groups) -> float | None:
    """Standard deviation pooled over groups (each around its own mean): sqrt(sum SS / sum dof)."""
    squares, dof = 0.0, 0
    for values in groups:
        values = np.asarray(values, dtype=float)
        if len(values) > 1:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
    return math.sqrt(squares / dof) if dof else None


def paired_t_power(difference: float, sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Power of the two-sided paired t-test on `n` seeds when the true mean difference is
    `difference` and per-seed differences spread with standard deviation `sd` (noncentral t)."""
    dof = n - 1
    critical = stats.t.ppf(0.5 + confidence / 2, dof)
    noncentrality = difference * math.sqrt(n) / sd
    # P(T < -c | nc) = P(T > c | -nc); far in the tail scipy returns NaN for a value that is ~0
    wrong_side = float(np.nan_to_num(stats.nct.sf(critical, dof, -noncentrality), nan=0.0))
    return float(stats.nct.sf(critical, dof, noncentrality)) + wrong_side


def minimal_detectable_difference(sd: float, n: int, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test on `n` seeds detects with
    probability `power`, when per-seed differences spread with standard deviation `sd`. Solved
    exactly with the noncentral t (the textbook (t_a + t_b) sd / sqrt(n) gives only 0.77 power at
    3 seeds)."""
    if n < 2:
        return math.inf
    if sd == 0:
        return 0.0
    upper = 100 * sd  # power is increasing in the difference; at 100 sd it is 1 for any n >= 2
    return float(optimize.brentq(lambda d: paired_t_power(d, sd, n, confidence) - power, 0.0, upper, xtol=1e-9 * sd))
