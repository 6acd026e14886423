"""N sampled solutions, answers grouped by equivalence, the largest group wins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem, StrategyResult
from strategies.base import Strategy, majority_choice, make_candidate


class MajorityVote(Strategy):
    name = "majority"

    def __init__(self, n: int = 4, temperature: float | None = None) -> None:
        super().__init__(n)
        self.temperature = temperature  # None: the policy's sampling temperature

    def run(self, problems: Sequence[Problem], policy: Policy, prm: Any = None) -> list[StrategyResult]:
        prompts = [policy.format_prompt(p.problem) for p in problems]
        outputs = policy.generate(prompts, n=self.n, temperature=self.temperature, request_keys=[p.id for p in problems])
        results = []
        for problem, prompt, completions in zip(problems, prompts, outputs):
            cands = [make_candidate(c.text, policy.step_delimiter, c) for c in completions]
            results.append(
                self.result(problem, cands, majority_choice(cands), policy.count_tokens(prompt))
            )
        return results
