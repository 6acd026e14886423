"""Final selection among a problem's candidates, the same for every strategy.

``aggregation`` (last, min, product, mean) turns a candidate's step scores into one score;
``selection`` picks the answer:

- ``highest``: the candidate with the highest aggregated score (best-of-N);
- ``weighted_majority``: answers grouped by equivalence, each group weighted by the sum of
  its candidates' scores (PRM-weighted majority vote);
- ``majority``: the largest group, scores ignored.

Unfinished candidates (a search stopped before the solution ended) and candidates with no
answer are never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

from itc.types import Candidate
from prm.scoring.aggregate import AGGREGATIONS, aggregate
from strategies.base import Strategy, StrategyConfigError, majority_choice

SELECTIONS = ("highest", "weighted_majority", "majority")


def check_selection(selection: str, aggregation: str) -> None:
    if selection not in SELECTIONS:
        raise StrategyConfigError(f"selection {selection!r} is not one of {', '.join(SELECTIONS)}")
    if aggregation not in AGGREGATIONS:
        raise StrategyConfigError(f"aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")


def eligible(c: Candidate) -> bool:
    return c.finished and c.answer is not None


def select(
    candidates: Sequence[Candidate],
    selection: str = "weighted_majority",
    aggregation: str = "min",
    among: Sequence[int] | None = None,
) -> int | None:
    """Index (into ``candidates``) of the chosen candidate, or None when none is eligible.

    Sets each considered candidate's ``score`` to its aggregated step score. ``among``
    restricts the choice to those indices (e.g. the final round of each chain).
    """
    check_selection(selection, aggregation)
    idx = [i for i in (range(len(candidates)) if among is None else among) if eligible(candidates[i])]
    if not idx:
        return None
    for i in idx:
        c = candidates[i]
        if c.step_scores is not None:
            c.score = aggregate(c.step_scores, aggregation)
    pool = [candidates[i] for i in idx]
    if selection == "majority":
        k = majority_choice(pool)
    elif selection == "weighted_majority":
        k = majority_choice(pool, weights=[_score(c) for c in pool])
    else:
        k = max(range(len(pool)), key=lambda j: (_score(pool[j]), -j))
    return None if k is None else idx[k]


def _score(c: Candidate) -> float:
    if c.score is None:
        raise ValueError("PRM selection needs scored candidates (no step_scores on a candidate)")
    return c.score


class PRMStrategy(Strategy):
    """A strategy that scores its candidates with the PRM and chooses by :func:`select`;
    holds the settings every such strategy shares."""

    needs_prm = True

    def __init__(
        self,
        n: int,
        temperature: float | None,
        aggregation: str,
        selection: str,
        check_equations: bool = False,
    ) -> None:
        super().__init__(n)
        check_selection(selection, aggregation)
        self.temperature = temperature  # None: the policy's sampling temperature
        self.aggregation = aggregation
        self.selection = selection
        # A step that states a false numeric equation scores 0, whatever the PRM says
        # (strategies.steps.zero_false_equations): an external check beside the PRM.
        self.check_equations = check_equations
