"""Aggregations of per-step PRM scores into one solution score."""

from __future__ import annotations

import math
from collections.abc import Sequence

AGGREGATIONS = ("last", "min", "product", "mean")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One score for a solution from its step scores.

    ``last``: the final step's score (the PRM read as an outcome model); ``min``: the weakest
    step (Math-Shepherd); ``product``: the probability that no step is wrong (PRM800K);
    ``mean``: the average. A solution with no steps scores 0.0: it offers no evidence.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation {how!r} is not one of {', '.join(AGGREGATIONS)}")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "product":
        return float(math.prod(step_scores))
    return float(sum(step_scores) / len(step_scores))
