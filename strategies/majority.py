"""N sampled solutions, answers grouped by equivalence, the largest group wins.

Self-consistency (Wang et al. 2023): the samples are independent, so the first k of a run at
N are a run at k (``itc-curves --subsample``). A sample cut off at the token limit votes with
the answer it wrote, as in every selection (:mod:`strategies.selection`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem
from strategies.accounting import Meter
from itc.candidates import make_candidate
from strategies.base import Found, Strategy


class MajorityVote(Strategy):
    name = "majority"

    def __init__(self, n: int = 4, temperature: float | None = None) -> None:
        super().__init__(n)
        self.temperature = temperature  # None: the policy's sampling temperature

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        prompts = [policy.format_prompt(p.problem) for p in problems]
        outputs = meter.generate(
            policy, prompts, range(len(problems)), n=self.n, temperature=self.temperature,
            request_keys=[p.id for p in problems],
        )
        return [Found([make_candidate(c.text, policy.step_delimiter, c) for c in outs]) for outs in outputs]
