"""The statistics a comparison of RL runs needs, from scipy.stats, as the field has settled them
(Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice", the rliable library):

- `iqm`: the interquartile mean, the mean of the middle 50% of the runs (`scipy.stats.trim_mean`
  with 25% cut from each end): robust to one outlier seed, less noisy than the median.
- `stratified_bootstrap_ci`: a percentile bootstrap that resamples runs *within* each stratum
  (regime), so every resample keeps each regime's number of runs (`scipy.stats.bootstrap` with one
  sample per stratum, resampled independently).
- `probability_of_improvement`: P(X > Y) for a run X of one preset and a run Y of another on the
  same regime (ties count half), the Mann-Whitney U statistic over n*m, averaged over regimes.
- `paired_t_ci` and `minimal_detectable_difference`: the paired comparison on common seeds and
  the smallest true difference the seeds resolve (5% two-sided test, 80% power).

rliable itself does not install beside verl's stack (with pandas 3 its `arch<8` dependency fails at
import, and arch 8 breaks its bootstrap), so these are computed here; tests/test_bench_stats.py
checks each against an independent computation.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
POWER = 0.80
RESAMPLES = 2000


def iqm(values) -> float:
    """The interquartile mean (25% trimmed from each end)."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def stratified_bootstrap_ci(strata: list, statistic, confidence: float = CONFIDENCE, seed: int = 0) -> tuple:
    """Percentile CI of `statistic(*strata)`, resampling each stratum's values with replacement
    independently of the others. A stratum of one value is held fixed (it cannot be resampled)."""
    strata = [np.asarray(values, dtype=float) for values in strata]
    fixed = [len(values) < 2 for values in strata]
    varying = [values for values, held in zip(strata, fixed) if not held]
    if not varying:
        value = statistic(*strata)
        return value, value

    def with_fixed(*resampled):
        pieces = iter(resampled)
        return statistic(*[values if held else next(pieces) for values, held in zip(strata, fixed)])

    result = stats.bootstrap(tuple(varying), with_fixed, n_resamples=RESAMPLES, confidence_level=confidence,
                             method="percentile", vectorized=False, random_state=seed)  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def pooled_iqm(*strata) -> float:
    """The IQM of all runs of all strata together."""
    return iqm(np.concatenate(strata))


def probability_of_improvement(pairs: list) -> float:
    """Mean over strata of P(X > Y) + P(X == Y) / 2, for pairs = [(x_values, y_values), ...]."""
    return float(np.mean([stats.mannwhitneyu(x, y).statistic / (len(x) * len(y)) for x, y in pairs]))


def probability_of_improvement_ci(pairs: list, confidence: float = CONFIDENCE, seed: int = 0) -> tuple:
    """Point estimate and stratified bootstrap CI of `probability_of_improvement`."""
    flat = [values for pair in pairs for values in pair]

    def statistic(*resampled):
        return probability_of_improvement(list(zip(resampled[0::2], resampled[1::2])))

    low, high = stratified_bootstrap_ci(flat, statistic, confidence, seed)
    return probability_of_improvement(pairs), low, high


def paired_t_ci(differences, confidence: float = CONFIDENCE) -> tuple:
    """Mean of paired differences and its t confidence interval (None, None for fewer than 2)."""
    values = np.asarray(differences, dtype=float)
    mean = float(values.mean()) if len(values) else None
    if len(values) < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


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
