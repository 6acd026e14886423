"""Lookahead search: beam search whose candidate steps are judged by where they lead.

Each open beam is rolled out ``lookahead`` more steps at temperature 0 (stopping early where
the rollout ends) and ranked by the PRM's aggregation of the step scores of the path and its
rollout; only the beam's own new step is kept. The rollouts' tokens, and the PRM tokens
spent scoring them, are counted. One unit of N is one beam, as in beam search, at about
(1 + lookahead) times its step samples. ``lookahead=0`` is beam search.

Compared with Snell et al. 2024 ("Scaling LLM Test-Time Compute Optimally can be More
Effective than Scaling Model Parameters", lookahead search): the same k-step rollout at
temperature 0, with the rollout's tokens charged to the search. The paper scores a step by
the PRM's prediction at the end of its rollout, which is this strategy under
``prm.aggregation=last``; another aggregation reads the whole path and rollout. search-and-learn's ``beam_search`` samples the lookahead steps but scores only the
beam's own text (the lookahead then costs tokens and changes nothing); here the rollout is
scored, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem
from prm.scoring.aggregate import aggregate
from strategies.accounting import Meter
from strategies.beam_search import BeamSearch
from strategies.steps import Partial, extend, score


class Lookahead(BeamSearch):
    name = "lookahead"

    def __init__(self, n: int = 4, lookahead: int = 2, **kwargs: Any) -> None:
        super().__init__(n, **kwargs)
        if lookahead < 0:
            raise ValueError(f"lookahead must be at least 0, got {lookahead}")
        self.lookahead = lookahead

    def rank(self, meter: Meter, policy: Policy, prm: Any, problems: Sequence[Problem], beams: list[Partial]) -> None:
        rollouts = [Partial(b.owner, list(b.steps), list(b.step_scores)) for b in beams]
        for _ in range(self.lookahead):
            todo = [k for k, r in enumerate(rollouts) if r.open]
            if not todo:
                break
            kids = extend(meter, policy, problems, [rollouts[k] for k in todo], 1, temperature=0.0)
            for k, children in zip(todo, kids):
                if children:
                    rollouts[k] = children[0]
        extended = [r for r, b in zip(rollouts, beams) if len(r.steps) > len(b.steps)]
        score(meter, prm, problems, extended, self.settings.check_equations)
        for b, r in zip(beams, rollouts):
            b.meta["rank"] = aggregate(r.step_scores, prm.aggregation)
            b.meta["lookahead_steps"] = len(r.steps) - len(b.steps)
