"""Self-reflection: generate, find the first doubtful step, revise from there, repeat.

Each of N chains starts from one sampled solution. A solution is doubted at its first step
that the PRM scores below ``threshold``, that states a false numeric equation
(:func:`itc.grading.equations.false_equation`), or, when no answer can be read from it,
at its last step. The chain then rewrites the solution from that step, up to ``rounds``
times or until nothing is doubted. Every round is kept as a candidate (``meta``: chain,
round, doubted step and why); the answer is chosen among each chain's last round.

How a rewrite is asked for (``mode``):

- ``backtrack`` (the embedded world's default): resample from the doubted step, keeping
  the steps before it. A tiny policy cannot follow a critique it never saw in training, so
  the feedback is the choice of where to resample.
- ``revise``: the prompt shows the previous attempt and the feedback (``feedback_template``)
  and asks for a new solution, for instruction-following policies.

One unit of N is one chain (1 to 1 + ``rounds`` solutions).

Compared with the papers it draws on: Snell et al. 2024 revise sequentially with a model
fine-tuned to revise (previous attempts in its context) and choose across the revisions of
each chain by verifier or majority; ``revise`` mode prompts an untuned model with the
attempt and the verifier's feedback instead, in the manner of Self-Refine (Madaan et al.
2023) with an external verifier. ``backtrack`` is PRM-guided resampling from the first
doubted step, closer to step-level rejection sampling than to reflection. The final choice
is among each chain's last round only (``among``), not across all rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.grading import extract_boxed
from itc.grading.equations import false_equation
from itc.policy import Policy
from itc.types import Problem
from strategies.accounting import Meter
from strategies.base import Found
from strategies.selection import PRMStrategy
from strategies.steps import Partial, extend, score

MODES = ("backtrack", "revise")
FEEDBACK_TEMPLATE = (
    "{problem}\n\nA previous attempt:\n\n{attempt}\n\nStep {step} of that attempt looks wrong "
    "({reason}). Write a corrected solution, step by step, with the final answer in \\boxed{{}}."
)


def doubt(p: Partial, threshold: float) -> tuple[int, str] | None:
    """(index of the first doubtful step, why), or None when the solution looks right."""
    for k, step in enumerate(p.steps):
        if k < len(p.step_scores) and p.step_scores[k] < threshold:
            return k, f"the verifier scores it {p.step_scores[k]:.2f}"
        if false_equation(step):
            return k, "an equation in it is false"
    if not p.steps:
        return 0, "the solution is empty"
    if not p.finished or extract_boxed(p.steps[-1]) is None:
        return len(p.steps) - 1, "no final answer in \\boxed{} can be read"
    return None


class SelfReflection(PRMStrategy):
    name = "self_reflection"

    def __init__(
        self,
        n: int = 4,
        rounds: int = 2,
        threshold: float = 0.5,
        mode: str = "backtrack",
        feedback_template: str = FEEDBACK_TEMPLATE,
        **settings: Any,
    ) -> None:
        super().__init__(n, **settings)
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if rounds < 0:
            raise ValueError(f"rounds must be at least 0, got {rounds}")
        self.rounds = rounds
        self.threshold = threshold
        self.mode = mode
        self.feedback_template = feedback_template

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        roots = [Partial(i) for i in range(len(problems))]
        first = extend(meter, policy, problems, roots, self.n, self.settings.temperature, whole=True)
        latest = []
        for kids in first:
            for c, p in enumerate(kids):
                p.meta = {"chain": c, "round": 0}
                latest.append(p)
        history = list(latest)
        score(meter, prm, problems, latest, self.settings.check_equations)
        for r in range(1, self.rounds + 1):
            todo = []
            for p in latest:
                found = doubt(p, self.threshold)
                if found is not None:
                    p.meta["doubted_step"], p.meta["doubt"] = found
                    todo.append(p)
            if not todo:
                break
            revised = self._revise(meter, policy, problems, todo)
            score(meter, prm, problems, revised, self.settings.check_equations)
            for old, new in zip(todo, revised):
                new.meta = {"chain": old.meta["chain"], "round": r}
                history.append(new)
            by_chain = {(p.owner, p.meta["chain"]): p for p in latest}
            for new in revised:
                by_chain[(new.owner, new.meta["chain"])] = new
            latest = list(by_chain.values())
        last_round = {(p.owner, p.meta["chain"]): p.meta["round"] for p in latest}
        out = []
        for i in range(len(problems)):
            mine = sorted((p for p in history if p.owner == i), key=lambda p: (p.meta["chain"], p.meta["round"]))
            cands = [p.to_candidate(policy.step_delimiter) for p in mine]
            for c in cands:
                c.meta["final"] = last_round[(i, c.meta["chain"])] == c.meta["round"]
            finals = [k for k, c in enumerate(cands) if c.meta["final"]]
            out.append(Found(cands, among=finals, meta={"mode": self.mode}))
        return out

    def _revise(self, meter: Meter, policy: Policy, problems: Sequence[Problem], doubted: list[Partial]) -> list[Partial]:
        """One rewrite of each doubted solution (a dead one if the prompt no longer fits)."""
        if self.mode == "backtrack":
            parents = [Partial(p.owner, p.steps[: p.meta["doubted_step"]], p.step_scores[: p.meta["doubted_step"]]) for p in doubted]
            prompts = None
        else:
            parents = [Partial(p.owner) for p in doubted]
            prompts = [
                policy.format_prompt(
                    self.feedback_template.format(
                        problem=problems[p.owner].problem,
                        attempt=policy.step_delimiter.join(p.steps),
                        step=p.meta["doubted_step"] + 1,
                        reason=p.meta["doubt"],
                    )
                )
                for p in doubted
            ]
        kids = extend(meter, policy, problems, parents, 1, self.settings.temperature, whole=True, prompts=prompts)
        out = []
        for parent, children in zip(parents, kids):
            if children:
                child = children[0]  # its tokens: this round's only (the kept prefix is not re-spent)
            else:
                child = Partial(parent.owner, list(parent.steps), list(parent.step_scores), dead=True)
            out.append(child)
        return out
