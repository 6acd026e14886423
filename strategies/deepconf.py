"""Confidence-weighted voting with early stopping (Fu et al. 2025, "Deep Think with
Confidence"): the policy's own token log-probabilities, no PRM.

A token's confidence is minus the mean of the ``top_logprobs`` largest log-probabilities of
its next-token distribution (:attr:`itc.types.Completion.token_confidence`). A trace's
*group confidence* is the mean over a sliding window of ``window`` tokens; its confidence is
the lowest group confidence along it (the mean over the whole trace when it is shorter than
the window).

- ``mode=offline``: N traces; keep the ``eta`` % most confident of those with an answer
  (``eta`` 10 is DeepConf-low, 90 DeepConf-high) and vote, each weighted by its confidence.
- ``mode=online``: ``warmup`` traces are generated first and set the threshold, the
  confidence that ``eta`` % of them reach (the 100 - eta percentile). The other N - warmup
  traces, of every problem in one batch, are streamed from the vLLM engine token by token
  (``Policy.generate(..., stop_when=...)``), and a trace is aborted at the token where a
  full window's confidence drops below its problem's threshold: the stop is inside the
  generation, as in DeepConf's vLLM fork, but through the engine's own request API (no fork,
  no logits processor). The vote is the warm-up traces that reach the threshold and the
  traces not stopped, weighted by confidence. Each result's ``meta`` says how many traces
  were stopped and the tokens they are estimated to have saved (the warm-up traces' mean
  length minus what each used); the measured saving is the difference in tokens against
  ``mode=offline`` at the same N (``make sweep-new``, docs/strategies.md). Online mode needs
  the vLLM backend.

Every trace is a candidate, with ``meta.confidence`` and ``meta.step_confidence`` (the mean
token confidence of each step; the steps' tokens are counted by re-tokenizing them, so a
token that spans the delimiter is given to one side), and in online mode ``meta.warmup`` or
``meta.stopped``; ``among`` is the traces that vote. One unit of N is one trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from itc.candidates import majority_choice, make_candidate
from itc.policy import Policy
from itc.types import Candidate, Completion, Problem
from strategies.accounting import Meter
from strategies.base import Found, Strategy, StrategyConfigError

MODES = ("offline", "online")


def group_confidences(token_confidence: Sequence[float], window: int) -> np.ndarray:
    """The mean confidence of every window of ``window`` consecutive tokens (empty when the
    trace is shorter)."""
    x = np.asarray(token_confidence, dtype=float)
    if len(x) < window:
        return np.empty(0)
    c = np.concatenate(([0.0], np.cumsum(x)))
    return (c[window:] - c[:-window]) / window


def trace_confidence(token_confidence: Sequence[float], window: int) -> float:
    """The lowest group confidence of a trace; its mean confidence when shorter than a window."""
    groups = group_confidences(token_confidence, window)
    if len(groups):
        return float(groups.min())
    return float(np.mean(token_confidence)) if len(token_confidence) else 0.0


def threshold(confidences: Sequence[float], eta: float) -> float:
    """The confidence that the ``eta`` % most confident traces reach."""
    return float(np.percentile(np.asarray(confidences, dtype=float), 100 - eta))


def drops_below(token_confidence: Sequence[float], window: int, bar: float, since: int = 0) -> bool:
    """Whether a full window ending at token ``since`` (0-based) or later has a mean below
    ``bar``; only those windows are computed, so a check per new token stays cheap."""
    groups = group_confidences(token_confidence[max(0, since - window + 1) :], window)
    return bool(len(groups) and groups.min() < bar)


def keep_top(confidences: Sequence[float], eta: float) -> list[int]:
    """Indices of the ``eta`` % most confident (at least one when there are any)."""
    if not len(confidences):
        return []
    bar = threshold(confidences, eta)
    return [i for i, c in enumerate(confidences) if c >= bar]


class DeepConf(Strategy):
    name = "deepconf"

    def __init__(
        self,
        n: int = 4,
        mode: str = "offline",
        eta: float = 10,
        window: int = 2048,
        top_logprobs: int = 20,
        warmup: int = 16,
        temperature: float | None = None,
    ) -> None:
        super().__init__(n)
        if mode not in MODES:
            raise StrategyConfigError(f"deepconf mode {mode!r} is not one of {', '.join(MODES)}")
        if not 0 < eta <= 100:
            raise StrategyConfigError(f"deepconf eta must be a percentage in (0, 100], got {eta}")
        if window < 1 or warmup < 1 or not 1 <= top_logprobs <= 20:
            raise StrategyConfigError(
                f"deepconf needs window >= 1, warmup >= 1 and 1 <= top_logprobs <= 20, got {window}, {warmup}, {top_logprobs}"
            )
        self.mode, self.eta, self.window = mode, eta, window
        self.top_logprobs, self.warmup, self.temperature = top_logprobs, warmup, temperature

    def rule(self, prm: Any) -> str:
        return "confidence_weighted"

    def choose(self, candidates: Sequence[Candidate], among: Sequence[int] | None, prm: Any) -> int | None:
        idx = [i for i in (range(len(candidates)) if among is None else among) if candidates[i].answer is not None]
        k = majority_choice([candidates[i] for i in idx], weights=[candidates[i].meta["confidence"] for i in idx])
        return None if k is None else idx[k]

    def _whole(self, problems: Sequence[Problem], policy: Policy, meter: Meter, n: int) -> list[list[Candidate]]:
        """``n`` whole traces per problem, each request keyed by its problem (as majority's,
        so offline DeepConf and majority vote at the same N read the same samples)."""
        prompts = [policy.format_prompt(p.problem) for p in problems]
        outputs = meter.generate(
            policy, prompts, range(len(problems)), n=n, temperature=self.temperature,
            request_keys=[p.id for p in problems], logprobs=self.top_logprobs,
        )
        return [[self._candidate(policy, c) for c in outs] for outs in outputs]

    def _candidate(self, policy: Policy, c: Completion, **meta: Any) -> Candidate:
        confs = c.token_confidence or []
        cand = make_candidate(c.text, policy.step_delimiter, c, meta=meta)
        cand.meta["confidence"] = trace_confidence(confs, self.window)
        cand.meta["step_confidence"] = _step_means(policy, cand.steps, confs)
        return cand

    def search(self, problems: Sequence[Problem], policy: Policy, prm: Any, meter: Meter) -> list[Found]:
        if self.mode == "offline":
            found = []
            for cands in self._whole(problems, policy, meter, self.n):
                answered = [i for i, c in enumerate(cands) if c.answer is not None]
                kept = keep_top([cands[i].meta["confidence"] for i in answered], self.eta)
                found.append(Found(cands, among=[answered[k] for k in kept]))
            return found
        return self._online(problems, policy, meter)

    def _online(self, problems: Sequence[Problem], policy: Policy, meter: Meter) -> list[Found]:
        if not policy.supports_stop_rule:
            raise StrategyConfigError(
                f"deepconf mode=online stops traces inside the generation: it needs policy.backend=vllm, "
                f"not policy {policy.name!r}'s backend (mode=offline works on any)"
            )
        warm = self._whole(problems, policy, meter, min(self.warmup, self.n))
        bars = [threshold([c.meta["confidence"] for c in cands], self.eta) for cands in warm]
        more = self.n - min(self.warmup, self.n)
        rest: list[list[Candidate]] = [[] for _ in problems]
        if more:
            window = self.window

            def stop(i: int, confs: Sequence[float], seen: int) -> bool:  # i: the problem
                return drops_below(confs, window, bars[i], seen)

            outputs = meter.generate(
                policy, [policy.format_prompt(p.problem) for p in problems], range(len(problems)), n=more,
                temperature=self.temperature, request_keys=[f"{p.id}/online" for p in problems],
                logprobs=self.top_logprobs, stop_when=stop,
            )
            rest = [[self._candidate(policy, c, stopped=c.finish_reason == "stopped") for c in outs] for outs in outputs]
        found = []
        for i, cands in enumerate(warm):
            for c in cands:
                c.meta["warmup"] = True
            all_cands = cands + rest[i]
            among = [k for k, c in enumerate(all_cands) if c.answer is not None and not c.meta.get("stopped")
                     and (not c.meta.get("warmup") or c.meta["confidence"] >= bars[i])]
            mean_warm = float(np.mean([c.completion_tokens for c in cands]))
            stopped = [c for c in rest[i] if c.meta["stopped"]]
            found.append(Found(all_cands, among=among, meta={
                "threshold": bars[i],
                "warmup": len(cands),
                "stopped": len(stopped),
                "stopped_tokens": sum(c.completion_tokens for c in stopped),
                "tokens_saved_estimate": round(sum(max(0.0, mean_warm - c.completion_tokens) for c in stopped), 1),
            }))
        return found


def _step_means(policy: Policy, steps: Sequence[str], confs: Sequence[float]) -> list[float]:
    """Mean token confidence of each step of a whole trace; the steps' tokens counted by
    tokenizing each step with its delimiter (the last step takes what remains)."""
    if not steps or not confs:
        return [0.0] * len(steps)
    counts = [len(ids) for ids in policy.tokenizer([s + policy.step_delimiter for s in steps], add_special_tokens=False)["input_ids"]]
    out, start = [], 0
    for k, n in enumerate(counts):
        end = len(confs) if k == len(counts) - 1 else min(len(confs), start + n)
        part = confs[start:end]
        out.append(float(np.mean(part)) if part else 0.0)
        start = end
    return out
