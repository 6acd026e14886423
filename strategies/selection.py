"""The final selection among a problem's candidates: one stage, the same for every strategy.

A rule is a ``selection`` under an ``aggregation`` (last, min, product, mean: how a
candidate's step scores become one score; :mod:`prm.scoring.aggregate`):

- ``highest/<aggregation>``: the candidate with the highest aggregated score (best-of-N);
- ``weighted_majority/<aggregation>``: answers grouped by equivalence, each group weighted
  by the sum of its candidates' scores (PRM-weighted majority vote);
- ``majority``: the largest group, scores ignored.

The aggregation belongs to the PRM (``prm.aggregation``, how that model's scores are read);
the strategy's ``selection`` names the rule that sets its ``accuracy``, and itc-run records
every rule for every result (:func:`select_all`), so that ``itc-curves --selection`` can
draw every strategy under one rule.

One rule for every selection: a candidate is chosen only if an answer can be read from it.
Whether it finished does not matter: a sample cut off at the token limit counts with the
answer it wrote, as in a plain majority vote (:func:`strategies.base.majority_choice`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itc.types import Candidate
from prm.scoring.aggregate import AGGREGATIONS, aggregate
from itc.candidates import majority_choice
from strategies.base import Strategy, StrategyConfigError

SELECTIONS = ("highest", "weighted_majority", "majority")
RULES = (
    "majority",
    *(f"weighted_majority/{a}" for a in AGGREGATIONS),
    *(f"highest/{a}" for a in AGGREGATIONS),
)


def check_selection(selection: str, aggregation: str = "min") -> None:
    if selection not in SELECTIONS:
        raise StrategyConfigError(f"selection {selection!r} is not one of {', '.join(SELECTIONS)}")
    if aggregation not in AGGREGATIONS:
        raise StrategyConfigError(f"aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")


def rule_name(selection: str, aggregation: str) -> str:
    """``majority``, or ``<selection>/<aggregation>``."""
    return "majority" if selection == "majority" else f"{selection}/{aggregation}"


def parse_rule(rule: str) -> tuple[str, str]:
    """(selection, aggregation) of a rule name; ValueError naming the rules for another."""
    if rule not in RULES:
        raise ValueError(f"selection rule {rule!r} is not one of {', '.join(RULES)}")
    selection, _, aggregation = rule.partition("/")
    return selection, aggregation or "min"


def eligible(c: Candidate) -> bool:
    return c.answer is not None


def select(
    candidates: Sequence[Candidate],
    selection: str = "weighted_majority",
    aggregation: str = "min",
    among: Sequence[int] | None = None,
) -> int | None:
    """Index (into ``candidates``) of the chosen candidate, or None when none is eligible.

    ``among`` restricts the choice to those indices (e.g. the final round of each chain).
    The PRM rules need ``step_scores`` on the eligible candidates."""
    check_selection(selection, aggregation)
    idx = [i for i in (range(len(candidates)) if among is None else among) if eligible(candidates[i])]
    if not idx:
        return None
    pool = [candidates[i] for i in idx]
    if selection == "majority":
        k = majority_choice(pool)
    else:
        scores = [_score(c, aggregation) for c in pool]
        if selection == "weighted_majority":
            k = majority_choice(pool, weights=scores)
        else:
            k = max(range(len(pool)), key=lambda j: (scores[j], -j))
    return None if k is None else idx[k]


def select_rule(candidates: Sequence[Candidate], rule: str, among: Sequence[int] | None = None) -> int | None:
    """:func:`select` under a rule name (``weighted_majority/min``)."""
    return select(candidates, *parse_rule(rule), among=among)


def select_all(candidates: Sequence[Candidate], among: Sequence[int] | None = None) -> dict[str, int | None]:
    """The choice under every rule in :data:`RULES`: ``majority`` always, the PRM rules when
    every candidate has step scores."""
    rules = RULES if all(c.step_scores is not None for c in candidates) else ("majority",)
    return {rule: select_rule(candidates, rule, among) for rule in rules}


def _score(c: Candidate, aggregation: str) -> float:
    if c.step_scores is None:
        raise ValueError("PRM selection needs scored candidates (no step_scores on a candidate)")
    return aggregate(c.step_scores, aggregation)


@dataclass(frozen=True)
class SearchSettings:
    """What every PRM strategy shares beside ``n``: the policy's sampling temperature for its
    samples (None: the policy's own), the final ``selection``, and the equation check."""

    temperature: float | None = None
    selection: str = "weighted_majority"
    # A step that states a false numeric equation scores 0, whatever the PRM says
    # (strategies.steps.zero_false_equations): an external check beside the PRM.
    check_equations: bool = False


class PRMStrategy(Strategy):
    """A strategy that scores its candidates with the PRM and chooses by :func:`select` under
    the PRM's aggregation; ``settings`` holds what every such strategy shares."""

    needs_prm = True

    def __init__(self, n: int, **settings: Any) -> None:
        super().__init__(n)
        try:
            self.settings = SearchSettings(**settings)
        except TypeError as e:  # an unknown key
            raise StrategyConfigError(f"{type(self).__name__}: {e}") from None
        check_selection(self.settings.selection)

    def rule(self, prm: Any) -> str:
        return rule_name(self.settings.selection, prm.aggregation)

    def choose(self, candidates: Sequence[Candidate], among: Sequence[int] | None, prm: Any) -> int | None:
        for c in candidates:  # the score recorded is the PRM's own reading
            if c.step_scores is not None:
                c.score = aggregate(c.step_scores, prm.aggregation)
        return select(candidates, self.settings.selection, prm.aggregation, among)
