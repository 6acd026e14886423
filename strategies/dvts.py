"""Diverse verifier tree search (DVTS): N/M independent subtrees, each grown greedily by the PRM.

Every iteration samples M next steps for the open leaf of each subtree (all subtrees of all
problems in one vLLM call), scores them, and moves the subtree to its best child (the PRM's
aggregation of the path's step scores; a child that can go on or has finished is preferred
to a dead one). A subtree ends when its best child ends (finished, or dead: an empty or
over-long step, or a prompt that no longer fits). Subtrees still open at the last of
``max_steps`` iterations sample their M children to the end of the solution there. Each
subtree's candidates are the M children of its last expansion, so a problem ends with N
candidates (N/M subtrees times M; at most N when M does not divide N). The whole tree
(every sampled step, its parent, score, tokens and whether it was kept) is in the result's
``meta["tree"]``.

One unit of N is one step sample per iteration: N/M subtrees times M children.

Compared with search-and-learn (``src/sal/search/diverse_verifier_tree_search.py``): the
same subtrees, greedy moves, final iteration to the end of the solution and output (the M
children of each subtree's last expansion). search-and-learn also ends a subtree whose text
holds ``boxed{`` (here: a step with ``\\boxed`` finishes the solution) and continues from
a child cut at the token limit, which here ends the subtree.
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
from strategies.steps import Partial, extend, score


class DVTS(PRMStrategy):
    name = "dvts"

    def __init__(self, n: int = 4, beam_width: int = 4, max_steps: int = 40, **settings: Any) -> None:
        super().__init__(n, **settings)
        if beam_width < 1 or max_steps < 1:
            raise ValueError(f"beam_width and max_steps must be at least 1, got {beam_width}, {max_steps}")
        self.beam_width = min(beam_width, n)
        self.max_steps = max_steps

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        s = self.settings
        subtrees = max(1, self.n // self.beam_width)
        trees: list[list[dict[str, Any]]] = [[] for _ in problems]
        leaves = [
            Partial(i, meta={"subtree": t, "node": None, "siblings": None})
            for i in range(len(problems))
            for t in range(subtrees)
        ]
        ended: list[list[Partial]] = []  # per subtree: the children of its last expansion
        for it in range(self.max_steps):
            last = it == self.max_steps - 1
            kids = extend(meter, policy, problems, leaves, self.beam_width, s.temperature, whole=last)
            score(meter, prm, problems, [c for cs in kids for c in cs], s.check_equations)
            nxt = []
            for leaf, children in zip(leaves, kids):
                if not children:  # the leaf's prompt no longer fits: its last expansion stands
                    ended.append(leaf.meta["siblings"] or [leaf])
                    continue
                ranks = [aggregate(c.step_scores, prm.aggregation) if c.steps else 0.0 for c in children]
                best = max(range(len(children)), key=lambda j: (children[j].open or children[j].finished, ranks[j]))
                tree = trees[leaf.owner]
                for j, c in enumerate(children):
                    c.meta = {"subtree": leaf.meta["subtree"], "node": len(tree), "kept": j == best, "siblings": children}
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
                if chosen.open:
                    nxt.append(chosen)
                else:
                    ended.append(children)
            leaves = nxt
            if not leaves:
                break
        per_problem: list[list[Partial]] = [[] for _ in problems]
        for group in sorted(ended, key=lambda g: (g[0].owner, g[0].meta["subtree"])):
            per_problem[group[0].owner] += group
        out = []
        for i in range(len(problems)):
            cands = []
            for p in per_problem[i]:
                meta = {k: v for k, v in p.meta.items() if k != "siblings"}
                c = p.to_candidate(policy.step_delimiter)
                c.meta = meta
                cands.append(c)
            out.append(Found(cands, meta={"tree": trees[i]}))
        return out
