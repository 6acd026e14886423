"""Candidates from solution texts, and the majority vote over their answers.

Core helpers that strategies, PRM data and evaluations share: splitting a solution into
steps, making a :class:`~itc.types.Candidate` from it, and voting over equivalent answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from itc.grading import EXACT_STRING_FALLBACK, GradingBudget, extract_boxed, group_by_equivalence
from itc.types import Candidate, Completion


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
