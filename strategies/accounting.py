"""Compute accounting: what each problem cost the policy and the PRM.

Strategies make their policy and PRM calls through a :class:`Meter`, which attributes the
tokens of every call (batched across problems) to the problem that asked for them. Two
counts are kept for the inputs:

- *sent*: every prompt counted once per sample (each sample is its own engine request,
  as vLLM's parallel sampling fans out), every PRM input in full;
- *computed*: what the engine reports it computed, the rest having been read from its
  prefix cache (vLLM's ``RequestOutput.num_cached_tokens`` for the policy, the rows its
  pooling runner returned for the PRM). A backend that does not report it (transformers)
  computes everything it is sent, once per sample.

A step-level search resends its whole prefix at every step, so its sent count grows about
quadratically with depth while an engine with prefix caching computes little more than the
new step. The run loop estimates FLOPs as 2 x parameters x computed tokens (prompt plus
completion for the policy, inputs for the PRM).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from itc.candidates import sample_candidates
from itc.policy import Policy
from itc.types import Candidate, Completion, Problem


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prm_tokens: int = 0
    prompt_tokens_computed: int = 0
    prm_tokens_computed: int = 0


def prompt_tokens_computed(sent: int, completions: Sequence[Completion]) -> int:
    """Prompt tokens the engine computed for one prompt's samples: the sum of what each
    sample's request reports, or the prompt once per sample where the backend says nothing."""
    return sum(sent if c.prompt_tokens_computed is None else c.prompt_tokens_computed for c in completions)


def score_usage(prm: Any, *args: Any) -> tuple[list[list[list[float]]], list[int], list[int]]:
    """``prm.score_with_usage(*args)`` as (scores, tokens sent, tokens computed) per problem;
    a PRM that reports only what it was sent is counted as computing all of it."""
    scores, sent, *computed = prm.score_with_usage(*args)
    return scores, sent, computed[0] if computed else list(sent)


class Meter:
    """Per-problem usage of one strategy call over a batch of ``num_problems`` problems."""

    def __init__(self, num_problems: int) -> None:
        self.usage = [Usage() for _ in range(num_problems)]
        # how many step-level calls each problem has taken part in: with the parent's place,
        # it names a request the same way whatever else is in the batch (its sampling seed)
        self.calls = [0] * num_problems

    def generate(
        self, policy: Policy, prompts: Sequence[str], owners: Sequence[int], n: int = 1, **kwargs: Any
    ) -> list[list[Completion]]:
        """``policy.generate(prompts, n, **kwargs)``; prompt ``i`` is charged to ``owners[i]``."""
        if not prompts:
            return []
        outputs = policy.generate(list(prompts), n=n, **kwargs)
        for owner, count, completions in zip(owners, policy.prompt_token_counts(prompts), outputs):
            u = self.usage[owner]
            u.prompt_tokens += count * len(completions)
            u.prompt_tokens_computed += prompt_tokens_computed(count, completions)
            u.completion_tokens += sum(c.num_tokens for c in completions)
        return outputs

    def sample(self, policy: Policy, problems: Sequence[Problem], n: int, **kwargs: Any) -> list[list[Candidate]]:
        """``n`` sampled candidates per problem (:func:`itc.candidates.sample_candidates`
        through :meth:`generate`), each problem's requests keyed by its id, so that its
        samples do not depend on the batch (``kwargs``: ``temperature``, ``max_tokens``)."""
        metered = partial(self.generate, policy, owners=range(len(problems)))
        return sample_candidates(policy, problems, n, metered, request_keys=[p.id for p in problems], **kwargs)

    def score(
        self,
        prm: Any,
        problems: Sequence[str],
        candidates: Sequence[Sequence[Sequence[str]]],
        owners: Sequence[int],
        known: Sequence[Sequence[int]] | None = None,
    ) -> list[list[list[float]]]:
        """``prm.score_with_usage(problems, candidates, known)``; group ``i`` is charged to
        ``owners[i]``."""
        if not problems:
            return []
        scores, sent, computed = score_usage(prm, list(problems), candidates, known)
        for owner, s, c in zip(owners, sent, computed):
            self.usage[owner].prm_tokens += s
            self.usage[owner].prm_tokens_computed += c
        return scores
