"""PRM beam search over steps (search-and-learn's ``beam_search``, batched across problems).

N beams of width M. The first iteration samples N first steps per problem; every iteration
then scores the new steps, keeps the N/M best open beams of each problem (by the PRM's
aggregation of their step scores) and samples M next steps from each, all problems' beams
in one vLLM call. A beam that ends is a finished candidate, with an answer or without one:
at EOS or a ``\\boxed`` answer, at the token limit, at an empty step, or when its prompt no
longer fits the context. A problem stops once it has N of them. Beams still open at the
last of ``max_steps`` iterations are generated to the end of the solution there (the
final iteration of search-and-learn), so every problem ends with candidates. A problem ends
with at most N candidates, the first N that ended; the final selection stage chooses
among them.

One unit of N is one beam: about N step samples per iteration per problem.

Compared with search-and-learn (``src/sal/search/beam_search.py``): the same pruning,
stopping rules and final iteration. search-and-learn copies the surviving beams until N are
active again at every iteration (and copies finished beams up to N at the end); here a
problem whose open beams number fewer than N/M expands only those, M ways each, so it
spends less than N samples at that iteration and may end with fewer than N candidates.
search-and-learn ranks with one ``agg_strategy`` (default ``last``); here the PRM's
``aggregation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem
from prm.scoring.aggregate import aggregate
from strategies.accounting import Meter
from strategies.base import Found
from strategies.selection import PRMStrategy
from strategies.steps import Partial, dedupe, extend, score


class BeamSearch(PRMStrategy):
    name = "beam_search"

    def __init__(
        self, n: int = 4, beam_width: int = 4, max_steps: int = 40, dedupe: bool = False, **settings: Any
    ) -> None:
        settings.setdefault("selection", "highest")
        super().__init__(n, **settings)
        if beam_width < 1 or max_steps < 1:
            raise ValueError(f"beam_width and max_steps must be at least 1, got {beam_width}, {max_steps}")
        self.beam_width = min(beam_width, n)  # N=1 is plain step-by-step sampling
        self.max_steps = max_steps
        self.dedupe = dedupe

    def rank(self, meter: Meter, policy: Policy, prm: Any, problems: Sequence[Problem], beams: list[Partial]) -> None:
        """Set ``beam.meta["rank"]`` on each open beam (already scored): what pruning keeps
        the best of. Beam search ranks by the aggregated step scores."""
        for b in beams:
            b.meta["rank"] = aggregate(b.step_scores, prm.aggregation)

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        s = self.settings
        keep = max(1, self.n // self.beam_width)
        done: list[list[Partial]] = [[] for _ in problems]
        parents = [Partial(i) for i in range(len(problems))]
        it = 0
        for it in range(self.max_steps):
            last = it == self.max_steps - 1  # generate to the end of the solution
            width = self.n if it == 0 else self.beam_width
            new = [b for kids in extend(meter, policy, problems, parents, width, s.temperature, whole=last) for b in kids]
            for b in parents:
                if b.dead:  # its prompt no longer fits the policy's context
                    done[b.owner].append(b)
            score(meter, prm, problems, new, s.check_equations)
            live: list[list[Partial]] = [[] for _ in problems]
            for b in new:
                b.meta["iteration"] = it
                (live[b.owner] if b.open else done[b.owner]).append(b)
            if self.dedupe:
                live = [dedupe(bs) for bs in live]
            self.rank(meter, policy, prm, problems, [b for bs in live for b in bs])
            parents = []
            for i, bs in enumerate(live):
                if len(done[i]) >= self.n:
                    continue  # enough finished beams for this problem
                bs.sort(key=lambda b: b.meta["rank"], reverse=True)
                parents += bs[:keep]
            if not parents:
                break
        return [
            Found([b.to_candidate(policy.step_delimiter) for b in done[i][: self.n]], meta={"iterations": it + 1})
            for i in range(len(problems))
        ]
