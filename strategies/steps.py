"""Step-level search state shared by the tree-search strategies (beam search, DVTS,
lookahead, self-reflection, MCTS): partial solutions extended one step at a time, batched
across problems, with their PRM step scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from itc.candidates import make_candidate
from itc.grading.equations import false_equation
from itc.policy import Policy, PromptTooLongError
from itc.types import Candidate, Problem
from prm.scoring.base import mark_too_long
from strategies.accounting import Meter

BOXED = "\\boxed"
POLICY_CONTEXT_FULL = "policy_context_full"  # meta of a partial the policy's context ended


@dataclass
class Partial:
    """A partial solution of problem ``owner``: its steps so far and their PRM scores."""

    owner: int
    steps: list[str] = field(default_factory=list)
    step_scores: list[float] = field(default_factory=list)
    tokens: int = 0  # completion tokens along this path
    finished: bool = False  # the solution ended (EOS, or a step with a final \boxed answer)
    dead: bool = False  # cannot be extended: empty or over-long step, or context full
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return not (self.finished or self.dead)

    def child(self, text: str, num_tokens: int, finish_reason: str) -> Partial:
        """This path extended by one generated step (``text`` without the delimiter)."""
        step = text.strip()
        new = Partial(self.owner, self.steps + ([step] if step else []), list(self.step_scores), self.tokens + num_tokens)
        new.finished = finish_reason == "eos" or BOXED in step
        new.dead = not new.finished and (not step or finish_reason == "length")
        return new

    def to_candidate(self, delimiter: str, **meta: Any) -> Candidate:
        text = delimiter.join(self.steps)
        return make_candidate(
            text,
            delimiter,
            completion_tokens=self.tokens,
            finished=self.finished,
            step_scores=list(self.step_scores),
            meta={**self.meta, **meta},
        )


def extend(
    meter: Meter,
    policy: Policy,
    problems: Sequence[Problem],
    parents: Sequence[Partial],
    n: int,
    temperature: float | None = None,
    whole: bool = False,
    prompts: Sequence[str] | None = None,
) -> list[list[Partial]]:
    """``n`` continuations of each parent in one batched call: one step each, or with
    ``whole`` the rest of the solution (split into steps). ``prompts`` replaces the default
    prompt (the problem, then the parent's steps) of each parent. A parent whose prompt no
    longer fits the policy's context gets no children and is marked dead, and a child cut off
    by the end of the context ends there; both record ``policy_context_full`` in their meta."""
    if prompts is None:
        prompts = [policy.format_prompt(problems[p.owner].problem, p.steps) for p in parents]
    texts, owners, rows, keys, counts = [], [], [], [], {}
    places: dict[int, int] = {}  # the parent's place among its problem's parents in this call
    for k, (parent, prompt, count) in enumerate(zip(parents, prompts, policy.prompt_token_counts(prompts))):
        place = places[parent.owner] = places.get(parent.owner, -1) + 1
        try:
            policy.check_prompt(prompt, count)
        except PromptTooLongError:
            parent.dead = True
            parent.meta[POLICY_CONTEXT_FULL] = True
            continue
        texts.append(prompt)
        owners.append(parent.owner)
        rows.append(k)
        counts[k] = count
        # the request's own sampling seed: its problem, its call and its place, never the batch
        keys.append(f"{problems[parent.owner].id}/call{meter.calls[parent.owner]}/parent{place}")
    for owner in places:
        meter.calls[owner] += 1
    outputs = meter.generate(
        policy, texts, owners, n=n, temperature=temperature, one_step=not whole, request_keys=keys
    )
    children: list[list[Partial]] = [[] for _ in parents]
    for k, completions in zip(rows, outputs):
        for c in completions:
            if whole:
                child = _whole(parents[k], c.text, c.num_tokens, c.finished, policy.step_delimiter)
            else:
                child = parents[k].child(c.text, c.num_tokens, c.finish_reason)
            if c.finish_reason == "length" and counts[k] + c.num_tokens >= policy.max_model_len:
                child.meta[POLICY_CONTEXT_FULL] = True  # the context ran out within this step
            children[k].append(child)
    return children


def _whole(parent: Partial, text: str, num_tokens: int, finished: bool, delimiter: str) -> Partial:
    steps = [s.strip() for s in text.split(delimiter) if s.strip()]
    new = Partial(parent.owner, parent.steps + steps, list(parent.step_scores), parent.tokens + num_tokens)
    new.finished = finished or any(BOXED in s for s in steps[-1:])
    new.dead = not new.finished
    return new


@lru_cache(maxsize=1 << 16)
def _false_equation(step: str) -> bool:  # searches re-score the same steps every iteration
    return false_equation(step)


def zero_false_equations(steps: Sequence[str], scores: Sequence[float]) -> list[float]:
    """``scores`` with every step that states a false numeric equation (``7+5=13``; see
    :func:`itc.grading.equations.false_equation`) set to 0."""
    return [0.0 if _false_equation(s) else float(x) for s, x in zip(steps, scores)]


def score(
    meter: Meter,
    prm: Any,
    problems: Sequence[Problem],
    partials: Sequence[Partial],
    check_equations: bool = False,
) -> None:
    """Score the steps each partial has no score for yet (those added since its parent was
    scored) in one batched PRM call, grouped by problem for the accounting; extends
    ``step_scores``. A PRM with prefix caching then recomputes little beyond the new steps.
    Identical partials of a problem (samples often repeat a step) are scored once. With
    ``check_equations`` a step with a false equation scores 0. A partial whose PRM input no
    longer fits the PRM's context scores 0 for its new steps and ends (dead, recorded as
    ``prm_input_too_long`` in its meta)."""
    groups: dict[int, dict[tuple[str, ...], list[Partial]]] = {}
    for p in partials:
        if len(p.steps) > len(p.step_scores):
            groups.setdefault(p.owner, {}).setdefault(tuple(p.steps), []).append(p)
    owners = list(groups)
    known = [[min(len(p.step_scores) for p in same) for same in groups[i].values()] for i in owners]
    scores = meter.score(
        prm, [problems[i].problem for i in owners], [[list(k) for k in groups[i]] for i in owners], owners, known
    )
    for i, per_problem, firsts in zip(owners, scores, known):
        for same, first, new in zip(groups[i].values(), firsts, per_problem):
            for p in same:
                if mark_too_long(new, p.meta):
                    p.dead = p.dead or not p.finished
            if check_equations:
                new = zero_false_equations(same[0].steps[first:], new)
            for p in same:
                p.step_scores = p.step_scores[:first] + list(new)


def dedupe(partials: Sequence[Partial]) -> list[Partial]:
    """The partials with distinct step lists, first occurrence kept."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for p in partials:
        key = tuple(p.steps)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
