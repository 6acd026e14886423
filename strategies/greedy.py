"""One solution at temperature 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem
from strategies.accounting import Meter
from itc.candidates import make_candidate
from strategies.base import Found, Strategy


class Greedy(Strategy):
    name = "greedy"

    def __init__(self, n: int = 1) -> None:
        super().__init__(1)

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        prompts = [policy.format_prompt(p.problem) for p in problems]
        outputs = meter.generate(
            policy, prompts, range(len(problems)), n=1, temperature=0.0, request_keys=[p.id for p in problems]
        )
        return [Found([make_candidate(c.text, policy.step_delimiter, c)]) for (c,) in outputs]
