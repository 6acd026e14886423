"""Candidates from solution texts, and the majority vote over their answers.

Core helpers that strategies, PRM data and evaluations share: splitting a solution into
steps, making a :class:`~itc.types.Candidate` from it, sampling N of them per problem
(:func:`sample_candidates`), and voting over equivalent answers (:func:`majority_choice`,
:func:`majority_is_right`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from itc.grading import EXACT_STRING_FALLBACK, GradingBudget, extract_boxed, group_by_equivalence
from itc.types import Candidate, Completion, Problem

if TYPE_CHECKING:
    from itc.policy import Policy


def split_steps(text: str, delimiter: str) -> list[str]:
    """The non-empty steps of a solution text, stripped."""
    return [s.strip() for s in text.split(delimiter) if s.strip()]


def make_candidate(text: str, delimiter: str, completion: Completion | None = None, **kw: Any) -> Candidate:
    """A candidate from a solution text: steps split at the delimiter, answer extracted."""
    return Candidate(
        text=text,
        steps=split_steps(text, delimiter),
        answer=extract_boxed(text),
        completion_tokens=completion.num_tokens if completion else kw.pop("completion_tokens", 0),
        finished=completion.finished if completion else kw.pop("finished", True),
        **kw,
    )


def sample_candidates(
    policy: Policy,
    problems: Sequence[Problem],
    n: int,
    generate: Callable[..., list[list[Completion]]] | None = None,
    **generate_kw: Any,
) -> list[list[Candidate]]:
    """``n`` sampled solutions per problem, as candidates (steps split at the policy's step
    delimiter, answers extracted). ``generate`` (default ``policy.generate``) is called with
    the prompts, ``n`` and ``generate_kw``, e.g. a strategy's metered call."""
    generate = generate or policy.generate
    outputs = generate([policy.format_prompt(p.problem) for p in problems], n=n, **generate_kw)
    return [[make_candidate(c.text, policy.step_delimiter, c) for c in comps] for comps in outputs]


def majority_choice(candidates: Sequence[Candidate], weights: Sequence[float] | None = None) -> int | None:
    """Index of a representative of the heaviest equivalence class of answers.

    Unit weights give a plain majority vote; ties go to the class seen first.
    Candidates with no answer never win; whether a candidate finished does not matter (a
    sample cut off at the token limit votes with the answer it wrote), the one rule of every
    selection (:mod:`strategies.selection`).
    """
    budget = GradingBudget()
    classes = group_by_equivalence([c.answer for c in candidates], budget=budget)
    if budget.exhausted:  # the grading budget ran out: some answers grouped by string only
        for c in candidates:
            c.meta[EXACT_STRING_FALLBACK] = True
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, cls in enumerate(classes):
        if cls is None:
            continue
        totals[cls] = totals.get(cls, 0.0) + (1.0 if weights is None else weights[i])
        first.setdefault(cls, i)
    if not totals:
        return None
    best = max(totals, key=lambda k: (totals[k], -first[k]))
    return first[best]


def majority_is_right(candidates: Sequence[Candidate], correct: Sequence[bool]) -> bool:
    """Whether the majority vote over ``candidates`` picks a right one (``correct[i]``:
    candidate ``i`` is right); no answer at all counts as wrong."""
    chosen = majority_choice(candidates)
    return chosen is not None and bool(correct[chosen])
