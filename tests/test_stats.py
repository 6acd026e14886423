"""itc.stats: bootstrap intervals against closed forms, and the paired interval."""

import math

import numpy as np
import pytest

from itc.stats import bootstrap_mean, paired_difference


def binomial_quantile(n: int, p: float, q: float) -> float:
    """The smallest k/n with P(Binomial(n, p) <= k) >= q, exactly."""
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if cdf >= q - 1e-12:
            return k / n
    return 1.0


@pytest.mark.parametrize("n, k", [(200, 140), (50, 45), (400, 20)])
def test_bootstrap_of_a_proportion_is_the_binomial_closed_form(n, k):
    # the resampled mean of k successes in n is Binomial(n, k/n)/n: its percentile interval
    # is that binomial's 2.5% and 97.5% quantiles (to the Monte Carlo error of one grid step)
    values = [1] * k + [0] * (n - k)
    lo, hi = bootstrap_mean(values, resamples=20000)
    p = k / n
    assert lo == pytest.approx(binomial_quantile(n, p, 0.025), abs=1.01 / n)
    assert hi == pytest.approx(binomial_quantile(n, p, 0.975), abs=1.01 / n)
    # and, for n large, the normal approximation p +- 1.96 sqrt(p(1-p)/n)
    if n >= 200:
        half = 1.96 * math.sqrt(p * (1 - p) / n)
        assert lo == pytest.approx(p - half, abs=1.5 / n) and hi == pytest.approx(p + half, abs=1.5 / n)


def test_bootstrap_is_seeded_and_degenerate_samples_have_a_point_interval():
    values = np.random.default_rng(1).integers(0, 2, 100)
    assert bootstrap_mean(values) == bootstrap_mean(values)
    assert bootstrap_mean([1, 1, 1]) == (1.0, 1.0)
    assert bootstrap_mean([]) is None


def test_paired_interval_on_a_constructed_case():
    # 100 problems: both runs right on 80, only a right on 10, only b right on 0, both wrong on 10.
    # The difference is +0.10 on every resample that keeps the mix; the paired interval is that
    # of a mean of 10 ones in 100 (closed form above), far narrower than two separate intervals.
    a = [1] * 80 + [1] * 10 + [0] * 10
    b = [1] * 80 + [0] * 10 + [0] * 10
    d = paired_difference(a, b, resamples=20000)
    assert d["diff"] == pytest.approx(0.10)
    assert d["excludes_zero"]
    assert d["low"] == pytest.approx(binomial_quantile(100, 0.1, 0.025), abs=0.0101)
    assert d["high"] == pytest.approx(binomial_quantile(100, 0.1, 0.975), abs=0.0101)
    lo_a, _ = bootstrap_mean(a)
    _, hi_b = bootstrap_mean(b)
    assert lo_a < hi_b  # unpaired intervals overlap, the paired one excludes 0
    # runs that win on as many problems each: the difference's interval holds 0
    even = paired_difference([1, 0] * 20 + [1] * 60, [0, 1] * 20 + [1] * 60)
    assert even["diff"] == 0 and not even["excludes_zero"] and even["low"] < 0 < even["high"]
    with pytest.raises(ValueError, match="same problems"):
        paired_difference([1, 0], [1])
