"""The strategy interface: a batch of problems in, candidates and a chosen answer out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from itc.candidates import majority_choice
from itc.errors import InputError
from itc.policy import Policy
from itc.types import Candidate, Problem, StrategyResult
from strategies.accounting import Meter


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


@dataclass
class Found:
    """What a search found for one problem: its candidates, the ones the final selection may
    choose from (None: all), and details for the result's ``meta``."""

    candidates: list[Candidate]
    among: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """A search, then a selection. ``run`` is the template every strategy shares: it checks
    for the PRM, opens the :class:`Meter` that counts the compute, runs the subclass's
    :meth:`search`, and chooses one candidate per problem with :meth:`choose`. Subclasses
    set ``name`` and implement ``search``; ``n`` is the budget knob."""

    name: str = "strategy"
    needs_prm: bool = False  # True: search() scores with the PRM it is given

    def __init__(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError(f"strategy n must be at least 1, got {n}")
        self.n = n

    def run(
        self, problems: Sequence[Problem], policy: Policy, prm: Any = None, meter: Meter | None = None
    ) -> list[StrategyResult]:
        """Solve a batch of problems; one result per problem, in order. ``meter``: the
        :class:`Meter` to make every call through (one per batch; default a plain one), for a
        caller that watches or steers the calls, as ``itc-gateway`` does."""
        if self.needs_prm:
            require_prm(prm, self.name)
        meter = Meter(len(problems)) if meter is None else meter
        found = self.search(problems, policy, prm, meter)
        results = []
        for problem, f, usage in zip(problems, found, meter.usage, strict=True):
            chosen = self.choose(f.candidates, f.among, prm)
            results.append(
                StrategyResult(
                    problem_id=problem.id,
                    candidates=f.candidates,
                    chosen_index=chosen,
                    chosen_answer=None if chosen is None else f.candidates[chosen].answer,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    prm_tokens=usage.prm_tokens,
                    prompt_tokens_computed=usage.prompt_tokens_computed,
                    prm_tokens_computed=usage.prm_tokens_computed,
                    selection=self.rule(prm),
                    among=f.among,
                    meta=f.meta,
                )
            )
        return results

    @abstractmethod
    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        """The candidates of each problem, in order; every policy and PRM call through ``meter``."""

    def rule(self, prm: Any) -> str:
        """The name of the final selection rule (see :mod:`strategies.selection`)."""
        return "majority"

    def choose(self, candidates: Sequence[Candidate], among: Sequence[int] | None, prm: Any) -> int | None:
        """The final selection: a plain majority vote over the candidates with an answer."""
        idx = list(range(len(candidates))) if among is None else list(among)
        k = majority_choice([candidates[i] for i in idx])
        return None if k is None else idx[k]
