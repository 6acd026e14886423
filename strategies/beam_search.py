"""PRM beam search over steps (as in search-and-learn, batched across problems).

N beams of width M: the first iteration samples N first steps per problem; every iteration
then scores the new steps, keeps the N/M best open beams of each problem (by the configured
aggregation of their step scores) and samples M next steps from each, all problems' beams
in one vLLM call. Beams that end (EOS or a ``\\boxed`` answer) are set aside as
candidates; a problem stops once it has N of them, or after ``max_steps`` iterations. The
final answer is chosen among the finished beams with the same aggregation.

One unit of N is one beam: about N step samples per iteration per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.policy import Policy
from itc.types import Problem, StrategyResult
from prm.scoring.aggregate import aggregate
from strategies.accounting import Meter
from strategies.base import require_prm
from strategies.selection import PRMStrategy, select
from strategies.steps import Partial, dedupe, extend, score


class BeamSearch(PRMStrategy):
    name = "beam_search"

    def __init__(
        self,
        n: int = 4,
        beam_width: int = 4,
        max_steps: int = 40,
        temperature: float | None = None,
        aggregation: str = "last",
        selection: str = "highest",
        dedupe: bool = False,
        check_equations: bool = False,
    ) -> None:
        super().__init__(n, temperature, aggregation, selection, check_equations)
        if beam_width < 1 or max_steps < 1:
            raise ValueError(f"beam_width and max_steps must be at least 1, got {beam_width}, {max_steps}")
        self.beam_width = min(beam_width, n)  # N=1 is plain step-by-step sampling
        self.max_steps = max_steps
        self.dedupe = dedupe

    def rank(self, meter: Meter, policy: Policy, prm: Any, problems: Sequence[Problem], beams: list[Partial]) -> None:
        """Set ``beam.meta["rank"]`` on each open beam (already scored): what pruning keeps
        the best of. Beam search ranks by the aggregated step scores."""
        for b in beams:
            b.meta["rank"] = aggregate(b.step_scores, self.aggregation)

    def run(self, problems: Sequence[Problem], policy: Policy, prm: Any = None) -> list[StrategyResult]:
        require_prm(prm, self.name)
        meter = Meter(len(problems))
        keep = max(1, self.n // self.beam_width)
        done: list[list[Partial]] = [[] for _ in problems]
        roots = [Partial(i) for i in range(len(problems))]
        new = [b for kids in extend(meter, policy, problems, roots, self.n, self.temperature) for b in kids]
        for it in range(self.max_steps):
            score(meter, prm, problems, new, self.check_equations)
            live: list[list[Partial]] = [[] for _ in problems]
            for b in new:
                b.meta["iteration"] = it
                (live[b.owner] if b.open else done[b.owner]).append(b)
            if self.dedupe:
                live = [dedupe(bs) for bs in live]
            self.rank(meter, policy, prm, problems, [b for bs in live for b in bs])
            parents = []
            for i, bs in enumerate(live):
                if sum(b.finished for b in done[i]) >= self.n:
                    continue  # enough finished beams for this problem
                bs.sort(key=lambda b: b.meta["rank"], reverse=True)
                parents += bs[:keep]
            if not parents or it == self.max_steps - 1:
                for b in parents:  # out of iterations: never chosen, kept for the record
                    done[b.owner].append(b)
                break
            new = [b for kids in extend(meter, policy, problems, parents, self.beam_width, self.temperature) for b in kids]
            for b in parents:
                if b.dead:  # its prompt no longer fits the policy's context
                    done[b.owner].append(b)
        results = []
        for i, problem in enumerate(problems):
            cands = [b.to_candidate(policy.step_delimiter) for b in done[i]]
            chosen = select(cands, self.selection, self.aggregation)
            results.append(self.result(problem, cands, chosen, usage=meter.usage[i], iterations=it + 1))
        return results
