"""Policy backend on OpenAI-compatible servers (``vllm serve``): ``policy.backend=openai``.

A prompt's ``n`` samples go in one ``/v1/completions`` request (``parallel_sampling``, the
default) with the prompt's token ids and the seed ``request_seed(...)``; vLLM gives sample
``j`` seed + j, the seeds the in-process backend gives its samples, so a server samples what
the in-process engine samples. The answer's ``usage`` (with
``prompt_tokens_details.cached_tokens`` when the server reports it:
``--enable-prompt-tokens-details``) gives the prompt tokens computed; it reports one
sample's cache hits, which stand for all. With ``parallel_sampling=False`` each sample is a
request of its own (``n=1``, seed + j), as the in-process backend sends them, each with its
own cache hits: exact accounting, ``n`` times more requests. The endpoint
pool (:mod:`itc.serving`) spreads the requests over the servers and retries failures.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from transformers import AutoTokenizer

from itc.policy.base import Policy, PromptConfig, SamplingConfig, StopRule, request_seed
from itc.serving import Endpoint, EndpointPool, MalformedResponse, ServingConfig
from itc.types import Completion

log = logging.getLogger(__name__)

_FINISH_REASONS = ("stop", "length", "abort")


class OpenAIPolicy(Policy):
    """A policy whose model runs behind one or more OpenAI-compatible servers."""

    concurrent_calls = True  # generate may be called from several threads at once

    def __init__(
        self,
        name: str,
        model: str,
        prompt: PromptConfig,
        sampling: SamplingConfig,
        serving: ServingConfig,
        *,
        served_model: str,
        parallel_sampling: bool = True,
        tokenizer: str | None = None,
        max_model_len: int = 4096,
        seed: int = 0,
        trust_remote_code: bool = False,
        **_: Any,  # the in-process backends' settings (dtype): the server's business
    ) -> None:
        self.name = name
        self.prompt_config = prompt
        self.sampling = sampling
        self.max_model_len = max_model_len
        self.seed = seed
        self.served_model = served_model
        self.parallel_sampling = parallel_sampling
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model, trust_remote_code=trust_remote_code)
        self._model_path = model
        self._num_parameters: int | None = None
        self._lock = threading.Lock()
        self._no_cache_report = False
        self.pool = EndpointPool(f"policy {name!r}", serving)
        try:
            served_len = self.pool.check_model(served_model)
        except BaseException:
            self.pool.close()
            raise
        if served_len is not None and served_len < max_model_len:
            log.warning(
                "policy %r: the server's context is %d tokens, shorter than policy.max_model_len=%d; using %d",
                name, served_len, max_model_len, served_len,
            )
            self.max_model_len = served_len

    @property
    def num_parameters(self) -> int:
        if self._num_parameters is None:
            from itc.policy.hf_backend import count_parameters_from_config

            self._num_parameters = count_parameters_from_config(self._model_path)
        return self._num_parameters

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        with self._lock:  # the prompt cache is shared by the runner's threads
            return super().encode_prompts(prompts)

    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        one_step: bool = False,
        request_keys: Sequence[str] | None = None,
        logprobs: int | None = None,
        stop_when: StopRule | None = None,
    ) -> list[list[Completion]]:
        if not prompts:
            return []
        self._check_keys(prompts, request_keys)
        self._check_logprobs(logprobs)
        self._check_stop_rule(stop_when, logprobs)
        temperature = self.sampling.temperature if temperature is None else temperature
        if max_tokens is None:
            max_tokens = self.sampling.max_step_tokens if one_step else self.sampling.max_tokens
        token_ids = self.encode_prompts(prompts)
        per_request = n if self.parallel_sampling else 1
        calls = []
        for i, (p, ids) in enumerate(zip(prompts, token_ids)):
            used = self.check_prompt(p, len(ids))
            seed = request_seed(self.seed, request_keys[i]) if request_keys is not None else None
            body: dict[str, Any] = {
                "model": self.served_model,
                "prompt": ids,
                "n": per_request,
                "temperature": temperature,
                "top_p": self.sampling.top_p if temperature > 0 else 1.0,
                "max_tokens": max(1, min(max_tokens, self.max_model_len - used)),
                "stop": [self.step_delimiter] if one_step else None,
                "logprobs": logprobs,
                "extra_body": {
                    "top_k": self.sampling.top_k if temperature > 0 else 0,
                    "repetition_penalty": self.sampling.repetition_penalty,
                    "return_token_ids": True,
                    # top log-probabilities keyed by token id: two tokens may share a text
                    "return_tokens_as_token_ids": logprobs is not None,
                    "skip_special_tokens": True,
                },
            }
            # a seeded request's sample j has seed + j, as in vLLM's own parallel sampling
            for j in range(0, n, per_request):
                sample_seed = None if seed is None else (seed + j) % (1 << 63)
                calls.append(self._request({**body, "seed": sample_seed}, len(ids), logprobs))
        answers = self.pool.gather(calls)
        samples = [c for answer in answers for c in answer]
        return [samples[k * n : (k + 1) * n] for k in range(len(prompts))]

    def _request(self, body: dict[str, Any], prompt_len: int, logprobs: int | None):
        async def call(endpoint: Endpoint) -> list[Completion]:
            response = await endpoint.openai.completions.create(**body)
            return self._completions(response, body["n"], prompt_len, logprobs)

        return call

    def _completions(self, response: Any, n: int, prompt_len: int, logprobs: int | None) -> list[Completion]:
        """The ``n`` samples of a completions response, checked field by field."""
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or len(choices) != n:
            count = len(choices) if isinstance(choices, list) else "no"
            raise MalformedResponse(f"{count} choices for a request of n={n}")
        for c in choices:
            if not isinstance(getattr(c, "text", None), str) or getattr(c, "finish_reason", None) not in _FINISH_REASONS:
                raise MalformedResponse(f"a choice without text or finish_reason: {c!r:.300}")
        usage = getattr(response, "usage", None)
        done = getattr(usage, "completion_tokens", None)
        sent = getattr(usage, "prompt_tokens", None)
        if not isinstance(done, int) or not isinstance(sent, int):
            raise MalformedResponse(f"no usage token counts: {usage!r:.300}")
        if sent != prompt_len:
            raise MalformedResponse(f"the server counted {sent} prompt tokens for a prompt of {prompt_len}")
        lengths = [getattr(c, "token_ids", None) for c in choices]
        if not all(isinstance(t, list) for t in lengths) or sum(map(len, lengths)) != done:
            raise MalformedResponse(f"choices' token ids do not add up to usage.completion_tokens={done}")
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None)
        if cached is None:
            cached = 0
            if not self._no_cache_report:
                self._no_cache_report = True
                log.info(
                    "policy %r: the server does not report cached prompt tokens (start it with "
                    "--enable-prompt-tokens-details); every prompt token is counted as computed", self.name,
                )
        out = []
        for c in sorted(choices, key=lambda c: getattr(c, "index", 0)):
            num_tokens = len(c.token_ids)
            reason, stop_reason = c.finish_reason, getattr(c, "stop_reason", None)
            if reason == "abort":
                raise MalformedResponse("the server aborted the request")
            if reason == "length":
                finish = "length"
            elif stop_reason is not None and stop_reason == self.step_delimiter:
                finish = "step"
            else:
                finish = "eos"
            confidence = None
            if logprobs is not None:
                confidence = _confidences(getattr(c, "logprobs", None), logprobs, num_tokens)
            out.append(
                Completion(
                    text=c.text,
                    num_tokens=num_tokens,
                    finished=finish == "eos",
                    finish_reason=finish,
                    # with parallel sampling the server reports one sample's cache hits; its
                    # samples start together, so each sees the cache that one saw
                    prompt_tokens_computed=sent - cached,
                    token_confidence=confidence,
                )
            )
        return out

    def close(self) -> None:
        self.pool.close()


def _confidences(lp: Any, k: int, num_tokens: int) -> list[float]:
    """Token confidences, as the vllm backend computes them: minus the mean of the top ``k``
    log-probabilities at each token. The server lists the sampled token among them, and
    once more (k + 1 entries) when it is not one of the top k; entries are keyed by token id
    (``return_tokens_as_token_ids``)."""
    tokens = getattr(lp, "tokens", None)
    tops = getattr(lp, "top_logprobs", None)
    if not isinstance(tops, list) or not isinstance(tokens, list) or len(tops) != len(tokens):
        raise MalformedResponse(f"logprobs without per-token top log-probabilities: {lp!r:.300}")
    if len(tokens) != num_tokens:
        raise MalformedResponse(f"log-probabilities of {len(tokens)} tokens for {num_tokens} tokens")
    out = []
    for token, top in zip(tokens, tops):
        if not isinstance(top, dict) or not top:
            raise MalformedResponse(f"empty top log-probabilities: {top!r:.200}")
        values = [v for t, v in top.items() if not (len(top) > k and t == token)]
        out.append(-sum(values) / len(values))
    return out
