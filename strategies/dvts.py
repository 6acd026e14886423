"""Diverse verifier tree search (DVTS): N/M independent subtrees, each grown greedily by the PRM.

Every iteration samples M next steps for the open leaf of each subtree (all subtrees of all
problems in one vLLM call), scores them, and moves the subtree to its best child (the
configured aggregation of the path's step scores). A subtree ends when its leaf finishes;
subtrees still open after ``max_steps`` are kept as unfinished candidates and never chosen.
The whole tree (every sampled step, its parent, score, tokens and whether it was kept) is in
the result's ``meta["tree"]``.

One unit of N is one step sample per iteration: N/M subtrees times M children.
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
from strategies.steps import Partial, extend, score


class DVTS(PRMStrategy):
    name = "dvts"

    def __init__(
        self,
        n: int = 4,
        beam_width: int = 4,
        max_steps: int = 40,
        temperature: float | None = None,
        aggregation: str = "last",
        selection: str = "weighted_majority",
        check_equations: bool = False,
    ) -> None:
        super().__init__(n, temperature, aggregation, selection, check_equations)
        if beam_width < 1 or max_steps < 1:
            raise ValueError(f"beam_width and max_steps must be at least 1, got {beam_width}, {max_steps}")
        self.beam_width = min(beam_width, n)
        self.max_steps = max_steps

    def run(self, problems: Sequence[Problem], policy: Policy, prm: Any = None) -> list[StrategyResult]:
        require_prm(prm, self.name)
        meter = Meter(len(problems))
        subtrees = max(1, self.n // self.beam_width)
        trees: list[list[dict[str, Any]]] = [[] for _ in problems]
        leaves = [
            Partial(i, meta={"subtree": s, "node": None})
            for i in range(len(problems))
            for s in range(subtrees)
        ]
        final: list[Partial] = []
        for it in range(self.max_steps):
            kids = extend(meter, policy, problems, leaves, self.beam_width, self.temperature)
            score(meter, prm, problems, [c for cs in kids for c in cs], self.check_equations)
            nxt = []
            for leaf, children in zip(leaves, kids):
                if not children:  # the leaf's prompt no longer fits
                    final.append(leaf)
                    continue
                ranks = [aggregate(c.step_scores, self.aggregation) if c.steps else 0.0 for c in children]
                best = max(range(len(children)), key=lambda j: (children[j].open or children[j].finished, ranks[j]))
                tree = trees[leaf.owner]
                for j, c in enumerate(children):
                    c.meta = {"subtree": leaf.meta["subtree"], "node": len(tree)}
                    tree.append({
                        "id": len(tree),
                        "parent": leaf.meta["node"],
                        "subtree": leaf.meta["subtree"],
                        "depth": it,
                        "step": c.steps[-1] if len(c.steps) > len(leaf.steps) else "",
                        "score": c.step_scores[-1] if c.step_scores else None,
                        "tokens": c.tokens - leaf.tokens,
                        "finished": c.finished,
                        "kept": j == best,
                    })
                chosen = children[best]
                (nxt if chosen.open else final).append(chosen)
            leaves = nxt
            if not leaves:
                break
        final += leaves  # still open after max_steps: unfinished
        per_problem: list[list[Partial]] = [[] for _ in problems]
        for leaf in sorted(final, key=lambda p: (p.owner, p.meta["subtree"])):
            per_problem[leaf.owner].append(leaf)
        results = []
        for i, problem in enumerate(problems):
            cands = [p.to_candidate(policy.step_delimiter) for p in per_problem[i]]
            chosen = select(cands, self.selection, self.aggregation)
            results.append(self.result(problem, cands, chosen, usage=meter.usage[i], tree=trees[i]))
        return results
