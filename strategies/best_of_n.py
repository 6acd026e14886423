"""Best-of-N: N independent samples, every step scored by the PRM, one chosen by selection.

One unit of N is one full sampled solution. The samples are independent, so the first k of
a run at N are a valid run at k (``evals.subsample`` draws every smaller N from one run).
As in search-and-learn's ``best_of_n``, with the selection a separate stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.candidates import make_candidate
from itc.policy import Policy
from itc.types import Problem
from prm.scoring.base import mark_too_long
from strategies.accounting import Meter
from strategies.base import Found
from strategies.selection import PRMStrategy
from strategies.steps import zero_false_equations


class BestOfN(PRMStrategy):
    name = "best_of_n"

    def __init__(self, n: int = 4, **settings: Any) -> None:
        super().__init__(n, **settings)

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        s = self.settings
        cands = meter.sample(policy, problems, self.n, temperature=s.temperature)
        scores = meter.score(
            prm, [p.problem for p in problems], [[c.steps for c in cs] for cs in cands], range(len(problems))
        )
        for cs, per_problem in zip(cands, scores):
            for c, sc in zip(cs, per_problem):
                mark_too_long(sc, c.meta)
                c.step_scores = zero_false_equations(c.steps, sc) if s.check_equations else sc
        return [Found(cs) for cs in cands]
