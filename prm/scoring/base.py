"""The PRM interface: per-step scores for candidate solutions, batched."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from itc.errors import InputError
from itc.types import Candidate
from prm.scoring.aggregate import AGGREGATIONS, aggregate
from prm.scoring.formats import Encoded, PRMFormat

log = logging.getLogger(__name__)


class PRMInputTooLongError(InputError):
    """A candidate's PRM input does not fit the model's context."""


class TooLongScores(list):
    """The scores of a candidate whose PRM input does not fit the PRM's context: 0 for each
    of its new steps. A list like any other candidate's scores; its type tells a search that
    the candidate cannot be judged further, so it ends there (recorded as
    ``prm_input_too_long`` in the candidate's meta)."""


PRM_INPUT_TOO_LONG = "prm_input_too_long"  # candidate meta key


def mark_too_long(scores: Sequence[float], meta: dict) -> bool:
    """Whether ``scores`` are a :class:`TooLongScores`; if so, say so in ``meta``."""
    if isinstance(scores, TooLongScores):
        meta[PRM_INPUT_TOO_LONG] = True
        return True
    return False


@dataclass
class Scored:
    """A backend's answer for a batch of inputs: ``scores[k]`` at input k's positions, and the
    input tokens ``sent[k]`` to the engine for it and ``computed[k]`` by it (the rest read
    from a prefix cache). An input scored twice counts twice in both."""

    scores: list[list[float]]
    sent: list[int]
    computed: list[int]


class PRM(ABC):
    """A process reward model: the probability that each step of a solution is good.

    Backends implement :meth:`_score_encoded`; formatting, batching across problems and
    candidates, and token accounting live here.
    """

    concurrent_calls: bool = False  # score may be called from several threads at once (servers)

    def __init__(
        self,
        name: str,
        format: PRMFormat,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_model_len: int,
        aggregation: str = "min",
    ) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}")
        self.name = name
        self.format = format
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.aggregation = aggregation
        self.tokens_scored = 0  # input tokens processed so far (for compute accounting)
        self.inputs_too_long = 0  # candidates scored 0 because they did not fit max_model_len

    @property
    @abstractmethod
    def num_parameters(self) -> int: ...

    @abstractmethod
    def _score_encoded(self, encoded: Sequence[Encoded], reuse_prefix: bool = False) -> Scored:
        """One score in [0, 1] per position of each input, all inputs in one batch, and the
        tokens sent and computed for each input.

        With ``reuse_prefix`` the inputs' positions are typically near their ends (the
        caller holds the scores before them), and a backend with prefix caching may skip
        recomputing a prefix it has seen, as long as every position is still computed."""

    def encode(self, problem: str, steps: Sequence[str]) -> Encoded:
        enc = self.format.encode(self.tokenizer, problem, steps)
        if len(enc.input_ids) > self.max_model_len:
            raise PRMInputTooLongError(
                f"PRM input of {len(enc.input_ids)} tokens exceeds max_model_len={self.max_model_len}"
            )
        return enc

    def score(
        self, problems: Sequence[str], candidates: Sequence[Sequence[Sequence[str]]]
    ) -> list[list[list[float]]]:
        """``scores[i][j][k]``: the score of step k of candidate j of problem i.

        ``candidates[i]`` holds problem i's candidates, each a list of step strings; a
        candidate with no steps gets ``[]``. Everything goes to the backend as one batch.
        """
        return self.score_with_usage(problems, candidates)[0]

    def score_with_usage(
        self,
        problems: Sequence[str],
        candidates: Sequence[Sequence[Sequence[str]]],
        known: Sequence[Sequence[int]] | None = None,
    ) -> tuple[list[list[list[float]]], list[int], list[int]]:
        """:meth:`score`, and the number of input tokens sent and computed for each problem.

        ``known[i][j]``: how many leading steps of candidate j of problem i the caller
        already has scores for (a search extending scored partial solutions). Its result
        then holds the scores of the later steps only, and a backend with prefix caching
        (vLLM) recomputes little more than the new steps. Tokens sent are the whole inputs;
        tokens computed are those the engine did not read from its prefix cache.

        A candidate whose input is longer than ``max_model_len`` is not sent: each of its
        new steps scores 0 (a :class:`TooLongScores`), so a search ends it and a selection
        never prefers it, and the other candidates and problems of the call are scored as
        usual."""
        if len(problems) != len(candidates):
            raise ValueError(f"{len(problems)} problems but {len(candidates)} candidate lists")
        where, batch = [], []
        out: list[list[list[float]]] = [[[] for _ in cands] for cands in candidates]
        for i, (problem, cands) in enumerate(zip(problems, candidates)):
            for j, steps in enumerate(cands):
                first = known[i][j] if known is not None else 0
                if not 0 <= first <= len(steps):
                    raise ValueError(f"known={first} scores for a candidate of {len(steps)} steps")
                if len(steps) > first:
                    try:
                        enc = self.encode(problem, list(steps))
                    except PRMInputTooLongError as e:
                        # the candidate cannot be judged: it ends here, scored 0
                        out[i][j] = TooLongScores([0.0] * (len(steps) - first))
                        self.inputs_too_long += 1
                        log.warning("%s; its new steps score 0 (problem begins %r)", e, problem[:60])
                        continue
                    where.append((i, j))
                    batch.append(Encoded(enc.input_ids, enc.positions[first:]))
        done = self._score_encoded(batch, reuse_prefix=known is not None) if batch else Scored([], [], [])
        self.tokens_scored += sum(done.sent)
        sent, computed = [0] * len(candidates), [0] * len(candidates)
        for (i, j), scores, s, c in zip(where, done.scores, done.sent, done.computed):
            out[i][j] = scores
            sent[i] += s
            computed[i] += c
        return out, sent, computed

    def aggregate(self, step_scores: Sequence[float], how: str | None = None) -> float:
        return aggregate(step_scores, how or self.aggregation)

    def score_candidates(
        self, problems: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> None:
        """Fill ``step_scores`` and ``score`` (this PRM's aggregation) of each candidate."""
        scores = self.score(problems, [[c.steps for c in cands] for cands in candidates])
        for cands, per_problem in zip(candidates, scores):
            for cand, step_scores in zip(cands, per_problem):
                cand.step_scores = list(step_scores)
                cand.score = self.aggregate(step_scores)
                mark_too_long(step_scores, cand.meta)
