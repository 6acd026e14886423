"""Best-of-N: N independent samples, every step scored by the PRM, one chosen by selection.

One unit of N is one full sampled solution. The samples are independent, so the first k of
a run at N are a valid run at k (``evals.subsample`` draws every smaller N from one run).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem, StrategyResult
from strategies.accounting import Meter
from strategies.base import make_candidate, require_prm
from strategies.selection import PRMStrategy, select
from strategies.steps import zero_false_equations


class BestOfN(PRMStrategy):
    name = "best_of_n"

    def __init__(
        self,
        n: int = 4,
        temperature: float | None = None,
        aggregation: str = "min",
        selection: str = "weighted_majority",
        check_equations: bool = False,
    ) -> None:
        super().__init__(n, temperature, aggregation, selection, check_equations)

    def run(self, problems: Sequence[Problem], policy: Policy, prm: Any = None) -> list[StrategyResult]:
        require_prm(prm, self.name)
        meter = Meter(len(problems))
        prompts = [policy.format_prompt(p.problem) for p in problems]
        outputs = meter.generate(
            policy, prompts, range(len(problems)), n=self.n, temperature=self.temperature,
            request_keys=[p.id for p in problems],
        )
        cands = [[make_candidate(c.text, policy.step_delimiter, c) for c in outs] for outs in outputs]
        scores = meter.score(
            prm, [p.problem for p in problems], [[c.steps for c in cs] for cs in cands], range(len(problems))
        )
        results = []
        for i, problem in enumerate(problems):
            for c, s in zip(cands[i], scores[i]):
                c.step_scores = zero_false_equations(c.steps, s) if self.check_equations else s
            chosen = select(cands[i], self.selection, self.aggregation)
            results.append(self.result(problem, cands[i], chosen, usage=meter.usage[i]))
        return results
