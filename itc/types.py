"""Core records shared by datasets, policies, strategies, PRMs and the run loop."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Problem:
    """One math problem with its reference answer (LaTeX, no surrounding ``$``)."""

    id: str
    problem: str
    answer: str
    level: int | None = None
    subject: str | None = None
    solution: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Completion:
    """What a policy returned for one sample."""

    text: str
    num_tokens: int
    # True when the sample ended the solution (EOS), False when it stopped at a step
    # delimiter or ran out of tokens.
    finished: bool
    finish_reason: str  # "eos", "step", "length", "stopped" (by the caller's stop_when)
    # Prompt tokens the engine computed for this sample's request (the rest it read from its
    # prefix cache); None when the backend does not say, and then the whole prompt counts.
    prompt_tokens_computed: int | None = None
    # With ``generate(..., logprobs=k)``: per generated token, minus the mean of the k
    # largest log-probabilities of its next-token distribution (the model's raw one, before
    # temperature): DeepConf's token confidence, high where the distribution is peaked.
    token_confidence: list[float] | None = None


@dataclass
class Candidate:
    """One candidate solution produced by a strategy for one problem."""

    text: str
    steps: list[str]
    answer: str | None
    completion_tokens: int
    finished: bool = True
    step_scores: list[float] | None = None
    score: float | None = None
    correct: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StrategyResult:
    """A strategy's output for one problem: every candidate and the chosen answer."""

    problem_id: str
    candidates: list[Candidate]
    chosen_index: int | None
    chosen_answer: str | None
    # Compute spent on this problem: tokens sent to the policy (each prompt once per sample's
    # request) and those the engine computed (not read from its prefix cache), tokens it
    # generated (kept or pruned), and PRM input tokens sent and computed.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prm_tokens: int = 0
    prompt_tokens_computed: int = 0
    prm_tokens_computed: int = 0
    # The final selection rule that chose (``majority``, ``highest/last``, ...), and the
    # candidates it could choose from (None: all of them).
    selection: str = "majority"
    among: list[int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
