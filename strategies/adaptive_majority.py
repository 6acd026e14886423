"""Adaptive self-consistency: sample in rounds, stop a problem once its vote is settled.

Every round samples ``round_size`` more solutions for each problem still open, all problems
in one vLLM call, up to N per problem (N is the maximum). After each round a problem stops
when its vote is settled:

- ``stop=beta`` (Aggarwal et al. 2023's Beta stopping criterion, its_hub's
  ``BetaSelfConsistency``): with a votes for the leading answer and b for the runner-up,
  the leading answer's share p between the two has the posterior Beta(a + 1, b + 1) under a
  uniform prior; stop when P(p > 1/2) >= ``threshold`` (0.95). Four agreeing votes and
  none against settle it (1 - 2^-5 > 0.95), three do not.
- ``stop=agreement``: stop when the leading answer has at least ``threshold`` of the
  answered votes (and ``min_votes`` of them).

Votes group answers by math-verify equivalence, as every vote here; a sample without an
answer does not vote. The final choice is the plain majority over every sample. Each
result's ``meta`` records the samples it used, the rounds and whether the vote settled
before N. One unit of N is one sample (at most). Each round's requests are seeded by the
problem's id and the round, so a problem's samples do not depend on the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from itc.candidates import make_candidate
from itc.grading import GradingBudget, group_by_equivalence
from itc.policy import Policy
from itc.types import Candidate, Problem
from strategies.accounting import Meter
from strategies.base import Found, Strategy, StrategyConfigError

STOPS = ("beta", "agreement")


def vote_counts(candidates: Sequence[Candidate]) -> list[int]:
    """The size of each class of equivalent answers, largest first."""
    classes = group_by_equivalence([c.answer for c in candidates], budget=GradingBudget())
    counts: dict[int, int] = {}
    for cls in classes:
        if cls is not None:
            counts[cls] = counts.get(cls, 0) + 1
    return sorted(counts.values(), reverse=True)


def leader_posterior(counts: Sequence[int]) -> float:
    """P(the leading answer's share against the runner-up > 1/2) under Beta(a + 1, b + 1).

    For whole a and b that is P(Binomial(a + b + 1, 1/2) <= a), exactly (the Beta-binomial
    identity of the regularized incomplete beta function)."""
    if not counts:
        return 0.0
    a, b = counts[0], counts[1] if len(counts) > 1 else 0
    m = a + b + 1
    return sum(math.comb(m, k) for k in range(a + 1)) / 2**m


def settled(counts: Sequence[int], stop: str, threshold: float, min_votes: int = 1) -> bool:
    """Whether a vote with these class sizes stops sampling."""
    if sum(counts) < min_votes or not counts:
        return False
    if stop == "beta":
        return leader_posterior(counts) >= threshold
    return counts[0] / sum(counts) >= threshold


class AdaptiveMajority(Strategy):
    name = "adaptive_majority"

    def __init__(
        self,
        n: int = 16,
        round_size: int = 4,
        stop: str = "beta",
        threshold: float = 0.95,
        min_votes: int = 1,
        temperature: float | None = None,
    ) -> None:
        super().__init__(n)
        if stop not in STOPS:
            raise StrategyConfigError(f"adaptive_majority stop {stop!r} is not one of {', '.join(STOPS)}")
        if round_size < 1 or min_votes < 1 or not 0 < threshold <= 1:
            raise StrategyConfigError(
                f"adaptive_majority needs round_size >= 1, min_votes >= 1 and 0 < threshold <= 1, "
                f"got {round_size}, {min_votes}, {threshold}"
            )
        self.round_size, self.stop, self.threshold, self.min_votes = round_size, stop, threshold, min_votes
        self.temperature = temperature

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        cands: list[list[Candidate]] = [[] for _ in problems]
        done = [False] * len(problems)
        rounds = [0] * len(problems)
        r = 0
        while True:
            todo = [i for i in range(len(problems)) if not done[i] and len(cands[i]) < self.n]
            if not todo:
                break
            sizes = {i: min(self.round_size, self.n - len(cands[i])) for i in todo}
            for size in sorted(set(sizes.values())):  # the last round of a problem may be smaller
                group = [i for i in todo if sizes[i] == size]
                outputs = meter.generate(
                    policy, [policy.format_prompt(problems[i].problem) for i in group], group, n=size,
                    temperature=self.temperature, request_keys=[f"{problems[i].id}/round{r}" for i in group],
                )
                for i, outs in zip(group, outputs):
                    cands[i] += [make_candidate(c.text, policy.step_delimiter, c, meta={"round": r}) for c in outs]
            for i in todo:
                rounds[i] = r + 1
                done[i] = settled(vote_counts(cands[i]), self.stop, self.threshold, self.min_votes)
            r += 1
        return [
            Found(cs, meta={"samples": len(cs), "rounds": rounds[i], "settled": done[i]})
            for i, cs in enumerate(cands)
        ]
