"""The benchmark's statistics (maspo_verl/bench/stats.py) against independent computations:
sorting for the interquartile mean, counting pairs for the probability of improvement, a
hand-written stratified bootstrap, printed t-table values for the confidence interval, and a
simulated t-test for the minimal detectable difference."""

import math
import random

import numpy as np
import pytest

from maspo_verl.bench import stats


def iqm_by_sorting(values):
    ordered = sorted(values)
    cut = int(0.25 * len(ordered))
    middle = ordered[cut : len(ordered) - cut]
    return sum(middle) / len(middle)


@pytest.mark.parametrize("n", [4, 5, 8, 9, 12, 30])
def test_iqm_is_the_mean_of_the_middle_half(n):
    rng = random.Random(n)
    values = [rng.gauss(0, 1) for _ in range(n)]
    assert stats.iqm(values) == pytest.approx(iqm_by_sorting(values))


def test_iqm_ignores_one_wild_seed():
    assert stats.iqm([0.5, 0.52, 0.54, 0.56, 0.58, 0.60, 0.62, -9.0]) == pytest.approx(
        iqm_by_sorting([0.5, 0.52, 0.54, 0.56, 0.58, 0.60, 0.62, -9.0])
    )
    assert stats.iqm([0.5, 0.52, 0.54, 0.56, 0.58, 0.60, 0.62, -9.0]) > 0.5


def improvement_by_counting(x, y):
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in x for b in y)
    return wins / (len(x) * len(y))


def test_probability_of_improvement_counts_pairs_per_regime_and_averages():
    rng = random.Random(3)
    pairs = []
    for size in (3, 5):
        x = [round(rng.random(), 1) for _ in range(size)]  # rounded: ties happen
        y = [round(rng.random(), 1) for _ in range(size + 1)]
        pairs.append((x, y))
    expected = sum(improvement_by_counting(x, y) for x, y in pairs) / len(pairs)
    assert stats.probability_of_improvement(pairs) == pytest.approx(expected)
    assert stats.probability_of_improvement([([1, 2], [1, 2])]) == pytest.approx(0.5)
    assert stats.probability_of_improvement([([3, 4], [1, 2])]) == 1.0


def hand_stratified_bootstrap(strata, statistic, resamples, confidence, seed):
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        drawn = [rng.choice(np.asarray(s), size=len(s), replace=True) for s in strata]
        values.append(statistic(*drawn))
    tail = (1 - confidence) / 2 * 100
    return np.percentile(values, tail), np.percentile(values, 100 - tail)


def test_stratified_bootstrap_agrees_with_a_hand_written_one():
    rng = np.random.default_rng(0)
    strata = [rng.normal(0.5, 0.05, 6), rng.normal(0.7, 0.02, 5)]
    low, high = stats.stratified_bootstrap_ci(strata, stats.pooled_iqm)
    hand_low, hand_high = hand_stratified_bootstrap(strata, stats.pooled_iqm, 20000, 0.95, 1)
    width = hand_high - hand_low
    assert width > 0.01
    assert low == pytest.approx(hand_low, abs=0.1 * width) and high == pytest.approx(hand_high, abs=0.1 * width)


def test_stratified_bootstrap_keeps_each_regime_its_share():
    """Regime A always 0, regime B always 1: resampling within regimes never changes the pooled
    mean; resampling the pooled runs (no strata) would."""
    low, high = stats.stratified_bootstrap_ci([[0.0] * 4, [1.0] * 4], lambda *s: float(np.mean(np.concatenate(s))))
    assert low == high == pytest.approx(0.5)


def test_a_stratum_of_one_run_is_held_fixed():
    low, high = stats.stratified_bootstrap_ci([[0.3], [0.5, 0.6, 0.7]], stats.pooled_iqm)
    assert low <= high
    assert stats.stratified_bootstrap_ci([[0.3]], stats.pooled_iqm) == (0.3, 0.3)


def test_probability_of_improvement_interval_brackets_the_estimate():
    pairs = [([0.6, 0.62, 0.65], [0.55, 0.6, 0.58]), ([0.5, 0.52], [0.5, 0.49, 0.47])]
    point, low, high = stats.probability_of_improvement_ci(pairs)
    assert point == pytest.approx(sum(improvement_by_counting(x, y) for x, y in pairs) / 2)
    assert 0 <= low <= point <= high <= 1


# t_{0.975, dof} from printed tables
T975 = {2: 4.302653, 4: 2.776445, 9: 2.262157}


@pytest.mark.parametrize("n", [3, 5, 10])
def test_paired_t_interval_uses_the_t_quantile(n):
    rng = random.Random(n)
    differences = [rng.gauss(0.02, 0.03) for _ in range(n)]
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    assert stats.paired_t_ci(differences) == pytest.approx((mean, mean - half, mean + half), rel=1e-5)
    assert stats.paired_t_ci([0.1]) == (0.1, None, None)


def test_pooled_sd_pools_within_group_spread():
    groups = [[1.0, 2.0, 3.0], [10.0, 14.0], [7.0]]  # the lone value adds no degree of freedom
    squares = (1 + 0 + 1) + (4 + 4)
    assert stats.pooled_sd(groups) == pytest.approx(math.sqrt(squares / 3))
    assert stats.pooled_sd([[1.0]]) is None


@pytest.mark.parametrize("n", [3, 5])
def test_the_minimal_detectable_difference_is_detected_four_times_in_five(n):
    """Simulate the paired t-test at the claimed difference: it rejects about 80% of the time."""
    sd = 0.02
    mdd = stats.minimal_detectable_difference(sd, n)
    rng = np.random.default_rng(n)
    trials = 20000
    samples = rng.normal(mdd, sd, size=(trials, n))
    t = samples.mean(axis=1) / (samples.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(np.abs(t) > T975[n - 1])
    assert rejected == pytest.approx(0.80, abs=0.015)
    # more seeds resolve smaller differences; none at all for one seed
    assert stats.minimal_detectable_difference(sd, n + 1) < mdd
    assert stats.minimal_detectable_difference(sd, 1) == math.inf
