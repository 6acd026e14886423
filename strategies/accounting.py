"""Compute accounting: what each problem cost the policy and the PRM.

Strategies make their policy and PRM calls through a :class:`Meter`, which attributes the
tokens of every call (batched across problems) to the problem that asked for them. Prompt
tokens are counted once per prompt per call, as sent; an engine with prefix caching
(vLLM's default) recomputes less than that, so prompt counts are an upper bound on
prefill work. FLOPs are estimated by the run loop as 2 x parameters x tokens, for the
policy and the PRM separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itc.policy import Policy
from itc.types import Completion


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prm_tokens: int = 0


class Meter:
    """Per-problem usage of one strategy call over a batch of ``num_problems`` problems."""

    def __init__(self, num_problems: int) -> None:
        self.usage = [Usage() for _ in range(num_problems)]

    def generate(
        self, policy: Policy, prompts: Sequence[str], owners: Sequence[int], n: int = 1, **kwargs: Any
    ) -> list[list[Completion]]:
        """``policy.generate(prompts, n, **kwargs)``; prompt ``i`` is charged to ``owners[i]``."""
        if not prompts:
            return []
        outputs = policy.generate(list(prompts), n=n, **kwargs)
        for owner, count, completions in zip(owners, policy.prompt_token_counts(prompts), outputs):
            self.usage[owner].prompt_tokens += count
            self.usage[owner].completion_tokens += sum(c.num_tokens for c in completions)
        return outputs

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
        scores, tokens = prm.score_with_usage(list(problems), candidates, known)
        for owner, count in zip(owners, tokens):
            self.usage[owner].prm_tokens += count
        return scores

