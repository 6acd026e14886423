"""Monte Carlo tree search over steps, with PUCT and PRM values, batched across problems.

Each simulation, for every problem at once: walk from the root to a leaf by PUCT
(``Q + c_puct * P * sqrt(N_parent) / (1 + N_child)``), sample ``children`` next steps from the
leaf, and value each new child by the PRM: the aggregated score of its path (the PRM's
aggregation), or with ``rollouts`` > 0 the mean aggregated score of that many sampled
completions from it (each rollout is also a candidate). Values are backed up to the root.
Several samples of the same step become one child whose prior P is the share of samples
that chose it. A dead child (an empty or over-long step, or a prompt that no longer fits)
is valued 0 and never walked to again; a node whose children are all dead is dead itself.
The candidates are the finished nodes and the rollouts; open paths never are.

One unit of N is one simulation: ``children`` step samples (and their rollouts) per problem.

Compared with the PUCT of AlphaZero (Silver et al. 2017), as used for LLM reasoning (e.g.
ReST-MCTS*, rStar): the same selection formula, with the policy's sample shares as priors
and the PRM (or PRM-scored rollouts) in place of a value network; one leaf per problem is
expanded per simulation (no virtual loss, no parallel leaves). A finished node walked to
again backs up its value once more, as a terminal state does in AlphaZero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from itc.policy import Policy
from itc.types import Problem
from prm.scoring.aggregate import aggregate
from strategies.accounting import Meter
from strategies.base import Found
from strategies.selection import PRMStrategy
from strategies.steps import Partial, extend, score


@dataclass
class Node:
    partial: Partial
    parent: int | None
    prior: float = 1.0
    samples: int = 1  # how many sampled steps landed on this node
    visits: int = 0
    value_sum: float = 0.0
    children: list[int] = field(default_factory=list)

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


class MCTS(PRMStrategy):
    name = "mcts"

    def __init__(
        self,
        n: int = 4,
        children: int = 4,
        rollouts: int = 1,
        c_puct: float = 1.0,
        max_depth: int = 40,
        **settings: Any,
    ) -> None:
        super().__init__(n, **settings)
        if children < 1 or rollouts < 0 or max_depth < 1:
            raise ValueError("mcts needs children >= 1, rollouts >= 0 and max_depth >= 1")
        self.children = children
        self.rollouts = rollouts
        self.c_puct = c_puct
        self.max_depth = max_depth

    def puct_leaf(self, tree: list[Node]) -> int:
        """The leaf PUCT walks to from the root, past dead children."""
        k = 0
        while live := [c for c in tree[k].children if not tree[c].partial.dead]:
            parent = tree[k]
            k = max(
                live,
                key=lambda c: tree[c].q
                + self.c_puct * tree[c].prior * math.sqrt(parent.visits) / (1 + tree[c].visits),
            )
        return k

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        s = self.settings
        trees = [[Node(Partial(i), None)] for i in range(len(problems))]
        rollouts: list[list[Partial]] = [[] for _ in problems]
        for _ in range(self.n):
            leaves = [(i, self.puct_leaf(tree)) for i, tree in enumerate(trees)]
            grow, again = [], []
            for i, k in leaves:
                node = trees[i][k]
                if node.partial.open and len(node.partial.steps) < self.max_depth:
                    grow.append((i, k))
                else:  # a finished (or dead) leaf: its value is known, back it up again
                    again.append((i, k, node.q))
            kids = extend(meter, policy, problems, [trees[i][k].partial for i, k in grow], self.children, s.temperature)
            new: list[tuple[int, int]] = []
            for (i, k), children in zip(grow, kids):
                new += self._add_children(trees[i], k, children)
                if not children:  # its prompt no longer fits (extend marked it dead)
                    again.append((i, k, 0.0))
            score(meter, prm, problems, [trees[i][c].partial for i, c in new], s.check_equations)
            values = self._values(meter, policy, prm, problems, trees, new, rollouts)
            for (i, c), v in zip(new, values):
                self._backup(trees[i], c, v)
            for i, k, v in again:
                self._backup(trees[i], k, v)
        out = []
        for i in range(len(problems)):
            nodes = [n.partial for n in trees[i][1:] if n.partial.finished]
            cands = [p.to_candidate(policy.step_delimiter, source="tree") for p in nodes]
            cands += [p.to_candidate(policy.step_delimiter, source="rollout") for p in rollouts[i]]
            tree = [
                {"id": j, "parent": n.parent, "step": n.partial.steps[-1] if n.partial.steps else "",
                 "visits": n.visits, "value": round(n.q, 4), "samples": n.samples, "dead": n.partial.dead}
                for j, n in enumerate(trees[i])
            ]
            out.append(Found(cands, meta={"tree": tree}))
        return out

    def _add_children(self, tree: list[Node], k: int, children: list[Partial]) -> list[tuple[int, int]]:
        """Merge identical samples into one child each; priors are sample shares."""
        owner = tree[k].partial.owner
        by_text: dict[tuple[str, ...], int] = {}
        for child in children:
            key = tuple(child.steps)
            if key in by_text:
                tree[by_text[key]].samples += 1
                continue
            by_text[key] = len(tree)
            tree.append(Node(child, k))
            tree[k].children.append(len(tree) - 1)
        for c in tree[k].children:
            tree[c].prior = tree[c].samples / max(1, len(children))
        if children and all(tree[c].partial.dead for c in tree[k].children):
            tree[k].partial.dead = True  # nowhere left to go from here
        return [(owner, c) for c in by_text.values()]

    def _values(
        self, meter: Meter, policy: Policy, prm: Any, problems: Sequence[Problem],
        trees: list[list[Node]], new: list[tuple[int, int]], rollouts: list[list[Partial]],
    ) -> list[float]:
        agg = prm.aggregation
        values = [
            0.0 if trees[i][c].partial.dead else aggregate(trees[i][c].partial.step_scores, agg) for i, c in new
        ]
        todo = [j for j, (i, c) in enumerate(new) if trees[i][c].partial.open]
        if not self.rollouts or not todo:
            return values
        parents = [trees[new[j][0]][new[j][1]].partial for j in todo]
        outs = extend(meter, policy, problems, parents, self.rollouts, self.settings.temperature, whole=True)
        score(meter, prm, problems, [r for rs in outs for r in rs], self.settings.check_equations)
        for j, rs in zip(todo, outs):
            if rs:
                values[j] = sum(aggregate(r.step_scores, agg) for r in rs) / len(rs)
                rollouts[new[j][0]] += rs
        return values

    @staticmethod
    def _backup(tree: list[Node], k: int | None, value: float) -> None:
        while k is not None:
            tree[k].visits += 1
            tree[k].value_sum += value
            k = tree[k].parent
