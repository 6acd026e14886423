"""One solution at temperature 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem, StrategyResult
from strategies.base import Strategy, make_candidate


class Greedy(Strategy):
    name = "greedy"

    def __init__(self, n: int = 1) -> None:
        super().__init__(1)

    def run(self, problems: Sequence[Problem], policy: Policy, prm: Any = None) -> list[StrategyResult]:
        prompts = [policy.format_prompt(p.problem) for p in problems]
        outputs = policy.generate(prompts, n=1, temperature=0.0, request_keys=[p.id for p in problems])
        results = []
        for problem, prompt, (completion,) in zip(problems, prompts, outputs):
            cand = make_candidate(completion.text, policy.step_delimiter, completion)
            results.append(self.result(problem, [cand], 0, policy.count_tokens(prompt)))
        return results
