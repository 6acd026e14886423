"""95% bootstrap intervals over problems (numpy, seeded), for accuracies and their differences.

Every accuracy is a mean of per-problem outcomes; its interval is the percentile bootstrap:
the problems are resampled with replacement ``RESAMPLES`` times (a fixed seed, so a table is
the same on every machine) and the 2.5th and 97.5th percentiles of the resampled means are
the bounds. For a 0/1 outcome the resampled mean is Binomial(n, p)/n, so the bounds are that
binomial's quantiles (tests/test_stats.py checks this closed form).

Two runs over the same problems are compared by the *paired* bootstrap: the same resampled
problems for both, so the interval is that of the mean per-problem difference, far narrower
than two separate intervals suggest when the runs agree on most problems.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000
SEED = 0


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """``resamples`` rows of ``n`` problem indices drawn with replacement (seeded)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates (last axis)."""
    alpha = (1.0 - confidence) / 2
    # the empirical quantiles themselves (no interpolation between replicates)
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha], axis=-1, method="inverted_cdf")
    return float(lo), float(hi)


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, float] | None:
    """The percentile-bootstrap interval of the mean of per-problem ``values``; None for none."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None
    return percentile_interval(x[resample_indices(x.size, resamples, seed)].mean(axis=1), confidence)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, float | bool] | None:
    """Mean of ``a - b`` over the same problems (aligned), with its paired-bootstrap
    interval and whether that interval excludes 0; None when there are no problems."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"a paired difference needs outcomes on the same problems ({x.shape} vs {y.shape})")
    interval = bootstrap_mean(x - y, confidence, resamples, seed)
    if interval is None:
        return None
    lo, hi = interval
    return {"diff": float((x - y).mean()), "low": lo, "high": hi, "excludes_zero": bool(lo > 0 or hi < 0)}


def rounded(interval: tuple[float, float] | None, digits: int = 4) -> list[float] | None:
    """An interval as a JSON list, rounded."""
    return None if interval is None else [round(interval[0], digits), round(interval[1], digits)]
