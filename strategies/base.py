"""The strategy interface: a batch of problems in, candidates and a chosen answer out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from itc.errors import InputError
from itc.grading import EXACT_STRING_FALLBACK, GradingBudget, extract_boxed, group_by_equivalence
from itc.policy import Policy
from itc.types import Candidate, Completion, Problem, StrategyResult
from strategies.accounting import Usage


def split_steps(text: str, delimiter: str) -> list[str]:
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
    Candidates with no answer never win.
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


class StrategyConfigError(InputError):
    """A strategy's settings are invalid, or it lacks what it needs (a PRM)."""


def require_prm(prm: Any, strategy: str) -> Any:
    """The PRM, or an error that says how to configure one."""
    if prm is None:
        raise StrategyConfigError(
            f"strategy {strategy!r} needs a process reward model: add prm=<entry> to the "
            "command (prm=toy for the embedded world; see configs/prm/)"
        )
    return prm


class Strategy(ABC):
    """Subclasses set ``name`` and implement ``run``; ``n`` is the budget knob."""

    name: str = "strategy"
    needs_prm: bool = False  # True: run() scores with the PRM it is given

    def __init__(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError(f"strategy n must be at least 1, got {n}")
        self.n = n

    @abstractmethod
    def run(self, problems: Sequence[Problem], policy: Policy, prm: Any = None) -> list[StrategyResult]:
        """Solve a batch of problems; one result per problem, in order."""

    @staticmethod
    def result(
        problem: Problem,
        candidates: list[Candidate],
        chosen: int | None,
        prompt_tokens: int = 0,
        usage: Usage | None = None,
        **meta: Any,
    ) -> StrategyResult:
        """The result for one problem; ``usage`` (from a :class:`Meter`) is the compute spent,
        else the prompt once and the candidates' own tokens."""
        return StrategyResult(
            problem_id=problem.id,
            candidates=candidates,
            chosen_index=chosen,
            chosen_answer=None if chosen is None else candidates[chosen].answer,
            prompt_tokens=usage.prompt_tokens if usage else prompt_tokens,
            completion_tokens=(
                usage.completion_tokens if usage else sum(c.completion_tokens for c in candidates)
            ),
            prm_tokens=usage.prm_tokens if usage else 0,
            meta=meta,
        )
