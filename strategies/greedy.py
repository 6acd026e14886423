"""One solution at temperature 0."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem
from strategies.accounting import Meter
from strategies.base import Found, Strategy


class Greedy(Strategy):
    name = "greedy"

    def __init__(self, n: int = 1) -> None:
        super().__init__(1)

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        return [Found(cands) for cands in meter.sample(policy, problems, 1, temperature=0.0)]
