"""The strategy interface: a batch of problems in, candidates and a chosen answer out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from itc.errors import InputError
from itc.candidates import majority_choice, make_candidate, split_steps  # noqa: F401 - used by strategies
from itc.policy import Policy
from itc.types import Candidate, Problem, StrategyResult
from strategies.accounting import Usage


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
