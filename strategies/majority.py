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
from strategies.base import Found, Strategy


class MajorityVote(Strategy):
    name = "majority"

    def __init__(self, n: int = 4, temperature: float | None = None) -> None:
        super().__init__(n)
        self.temperature = temperature  # None: the policy's sampling temperature

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        return [Found(cands) for cands in meter.sample(policy, problems, self.n, temperature=self.temperature)]
