"""Policy backend on an in-process vLLM engine (``vllm.LLM``)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import itertools
import json
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from itc.errors import BackendError
from itc.policy.base import Policy, PromptConfig, SamplingConfig, StopRule, request_seed
from itc.policy.reaper import child_processes, reap_on_exit
from itc.types import Completion

log = logging.getLogger(__name__)

# Engines are expensive to start (tens of seconds on a CPU), so one engine per distinct
# configuration lives for the whole process: a Hydra multirun or a test session reuses it.
_ENGINES: dict[str, Any] = {}


def shutdown_engines(timeout: float = 10.0, keep: Collection[Any] = ()) -> None:
    """Stop every cached engine (but those in ``keep``, ``vllm.LLM`` objects) through vLLM's
    own shutdown path, and wait for the client's background threads to end (their sockets
    closed) before returning."""
    for key, llm in list(_ENGINES.items()):
        if any(llm is kept for kept in keep):
            continue
        del _ENGINES[key]
        client = llm.llm_engine.engine_core
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the engine may be dead already
            log.debug("engine shutdown failed", exc_info=True)
        thread = getattr(client, "output_queue_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout)
    gc.collect()


def engines_running() -> bool:
    """Whether this process has started a vLLM engine that is still up."""
    return bool(_ENGINES)


# The safety net for code that never calls shutdown_engines (a library user's script).
atexit.register(shutdown_engines)


def get_engine(env: dict[str, Any] | None = None, **engine_kwargs: Any):
    """A process-wide ``vllm.LLM`` for these arguments (started on first use).

    ``env``: environment variables set while the engine starts, for vLLM settings that are
    read from the environment by the engine's own processes (for example
    ``VLLM_CPU_NUM_OF_RESERVED_CPU``, the CPU cores kept free of the model's threads).
    """
    from vllm import LLM

    if env is not None and not hasattr(env, "items"):
        raise ValueError(f"vllm.env must map variable names to values, got {env!r}")
    env = {str(k): str(v) for k, v in (env or {}).items()}
    key = json.dumps({**engine_kwargs, "env": env}, sort_keys=True, default=str)
    if key not in _ENGINES:
        log.info("Starting vLLM engine for %s", engine_kwargs.get("model"))
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        before = child_processes()
        try:
            _ENGINES[key] = LLM(**engine_kwargs)
        finally:
            # also after a failed start: its processes may be half up
            reap_on_exit(child_processes() - before)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return _ENGINES[key]


# vLLM's errors for an engine that died or cannot serve (vllm.v1.engine.exceptions)
ENGINE_FAILURES = ("EngineDeadError", "EngineGenerateError")


@contextlib.contextmanager
def engine_failures(what: str) -> Iterator[None]:
    """A dead or failing vLLM engine becomes a :class:`BackendError` naming ``what``."""
    try:
        yield
    except Exception as e:
        if type(e).__name__ in ENGINE_FAILURES:
            raise BackendError(f"{what}: the vllm engine failed ({type(e).__name__}: {e})") from e
        raise


class VLLMPolicy(Policy):
    supports_stop_rule = True

    def __init__(
        self,
        name: str,
        model: str,
        prompt: PromptConfig,
        sampling: SamplingConfig,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        max_model_len: int = 4096,
        seed: int = 0,
        gpu_memory_utilization: float = 0.5,
        enforce_eager: bool = False,
        enable_prefix_caching: bool = True,
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        env: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.prompt_config = prompt
        self.sampling = sampling
        self.max_model_len = max_model_len
        self.seed = seed
        self.llm = get_engine(
            model=model,
            tokenizer=tokenizer or model,
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            enable_prefix_caching=enable_prefix_caching,
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
            env=env,
            **(engine_kwargs or {}),
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._num_parameters: int | None = None
        self._model_path = model

    @property
    def num_parameters(self) -> int:
        if self._num_parameters is None:
            from itc.policy.hf_backend import count_parameters_from_config

            self._num_parameters = count_parameters_from_config(self._model_path)
        return self._num_parameters

    @functools.cached_property
    def _delimiter_token(self) -> int | None:
        """The step delimiter's token id when generation can stop on that token instead of
        on the string: it is one token and no other token's text contains it (else a merged
        token such as ``".\n\n"`` would end a step unseen). Stopping on a token lets vLLM
        skip detokenizing every sampled token; the texts are decoded in one batch instead."""
        tok = self.tokenizer
        ids = tok.encode(self.step_delimiter, add_special_tokens=False)
        if len(ids) != 1:
            return None
        pieces = tok.batch_decode([[i] for i in range(len(tok))])
        if any(self.step_delimiter in piece for i, piece in enumerate(pieces) if i != ids[0]):
            return None
        return ids[0]

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
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        self._check_keys(prompts, request_keys)
        self._check_logprobs(logprobs)
        self._check_stop_rule(stop_when, logprobs)
        temperature = self.sampling.temperature if temperature is None else temperature
        if max_tokens is None:
            max_tokens = self.sampling.max_step_tokens if one_step else self.sampling.max_tokens
        delimiter = self.step_delimiter
        stop_token = self._delimiter_token if one_step else None
        by_string = one_step and stop_token is None
        token_ids = self.encode_prompts(prompts)
        params = []
        for i, (p, ids) in enumerate(zip(prompts, token_ids)):
            used = self.check_prompt(p, len(ids))
            params.append(
                SamplingParams(
                    n=1,
                    temperature=temperature,
                    top_p=self.sampling.top_p if temperature > 0 else 1.0,
                    top_k=self.sampling.top_k if temperature > 0 else 0,
                    repetition_penalty=self.sampling.repetition_penalty,
                    max_tokens=max(1, min(max_tokens, self.max_model_len - used)),
                    stop=[delimiter] if by_string else None,
                    stop_token_ids=[stop_token] if stop_token is not None else None,
                    detokenize=by_string,
                    # vLLM gives a seeded request its own generator (its n samples: seed + j)
                    seed=request_seed(self.seed, request_keys[i]) if request_keys is not None else None,
                    logprobs=logprobs,
                    flat_logprobs=True,  # a few flat lists per request, not a dict per token
                )
            )
        # One request per sample, as vLLM's own parallel sampling (n > 1) fans out: each
        # request then reports its own prefix-cache hits (num_cached_tokens), where a
        # parallel-sampling output reports one child's only.
        requests = [TokensPrompt(prompt_token_ids=ids) for ids in token_ids for _ in range(n)]
        sample_params = [_sample_params(sp, j) for sp in params for j in range(n)]
        with engine_failures(f"policy {self.name!r}"):
            if stop_when is None:
                outputs = self.llm.generate(requests, sample_params, use_tqdm=False)
            else:
                outputs = self._stream(requests, sample_params, [k // n for k in range(len(requests))], stop_when)
        samples = [out.outputs[0] for out in outputs]
        if not by_string:  # texts decoded here, in one batch
            texts = self.tokenizer.batch_decode(
                [_without(c.token_ids, stop_token) if c.stop_reason == stop_token else c.token_ids for c in samples],
                skip_special_tokens=True,
                clean_up_tokenization_spaces=False,  # as vLLM's own detokenizer
            )
        else:
            texts = [c.text for c in samples]
        results: list[list[Completion]] = [[] for _ in prompts]
        for k, (out, c) in enumerate(zip(outputs, samples)):
            if c.finish_reason == STOPPED:
                reason = STOPPED
            elif c.finish_reason == "length":
                reason = "length"
            elif c.stop_reason is not None and c.stop_reason in (delimiter, stop_token):
                reason = "step"
            else:
                reason = "eos"
            results[k // n].append(
                Completion(
                    text=texts[k],
                    num_tokens=len(c.token_ids),
                    finished=reason == "eos",
                    finish_reason=reason,
                    prompt_tokens_computed=len(out.prompt_token_ids) - (out.num_cached_tokens or 0),
                    token_confidence=None if logprobs is None else _sample_confidences(c),
                )
            )
        return results

    def _stream(self, requests: list[Any], params: list[Any], prompts: list[int], stop_when: StopRule) -> list[Any]:
        """The requests run on the engine step by step, their new tokens read as they come
        (``RequestOutputKind.DELTA``); a sample for which ``stop_when`` holds is aborted
        there, so the engine computes nothing more for it. Returns outputs shaped as
        ``LLM.generate``'s (one per request, in order)."""
        from vllm.sampling_params import RequestOutputKind

        engine = self.llm.llm_engine
        batch = next(_STREAM_BATCHES)
        index: dict[str, int] = {}
        states = []
        for k, (request, sp) in enumerate(zip(requests, params)):
            sp = sp.clone()
            sp.output_kind = RequestOutputKind.DELTA
            rid = f"itc-stream-{batch}-{k}"
            engine.add_request(rid, request, sp)
            index[rid] = k
            states.append(_Streamed(request["prompt_token_ids"]))
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    rid = out.request_id if out.request_id in index else out.request_id.rsplit("-", 1)[0]
                    k = index[rid]
                    state, c = states[k], out.outputs[0]
                    seen = len(state.confidences)
                    state.add(c, out.num_cached_tokens)
                    if out.finished:
                        state.end(c.finish_reason, c.stop_reason)
                    elif stop_when(prompts[k], state.confidences, seen):
                        engine.abort_request([rid])
                        state.end(STOPPED, None)
        except BaseException:
            engine.abort_request([rid for rid, k in index.items() if states[k].finish_reason is None])
            raise
        return states


STOPPED = "stopped"  # a sample cut by the caller's stop rule (``stop_when``)
_STREAM_BATCHES = itertools.count()


class _Streamed:
    """One streamed request, shaped as a ``RequestOutput`` with one sample."""

    def __init__(self, prompt_token_ids: list[int]) -> None:
        self.prompt_token_ids = prompt_token_ids
        self.num_cached_tokens: int | None = None
        self.token_ids: list[int] = []
        self.confidences: list[float] = []
        self.finish_reason: str | None = None
        self.stop_reason: Any = None
        self.text = ""
        self.outputs = [self]

    def add(self, c: Any, num_cached_tokens: int | None) -> None:
        self.token_ids += c.token_ids
        self.text += c.text or ""
        if c.logprobs is not None:
            self.confidences += _confidences(c.logprobs)
        if num_cached_tokens is not None:
            self.num_cached_tokens = num_cached_tokens

    def end(self, finish_reason: str, stop_reason: Any) -> None:
        self.finish_reason, self.stop_reason = finish_reason, stop_reason


def _sample_params(params: Any, j: int) -> Any:
    """The parameters of sample ``j`` of a request: a seeded request's samples get seeds
    seed + j, as vLLM's own parallel sampling gives them."""
    if params.seed is None:
        return params
    sample = params.clone()
    sample.seed = (params.seed + j) % (1 << 63)
    return sample


def _sample_confidences(sample: Any) -> list[float]:
    """A sample's token confidences (a streamed sample gathered them as it went)."""
    return sample.confidences if isinstance(sample, _Streamed) else _confidences(sample.logprobs)


def _confidences(flat: Any) -> list[float]:
    """Token confidences from vLLM's flat logprobs: at each position the sampled token's
    entry comes first, then the top k (which may list the sampled token again)."""
    lps = flat.logprobs
    return [
        -sum(lps[s + 1 : e]) / (e - s - 1) if e - s > 1 else -lps[s]
        for s, e in zip(flat.start_indices, flat.end_indices)
    ]


def _without(ids: Sequence[int], stop_token: int | None) -> Sequence[int]:
    """A sample's ids without the stop token vLLM appends when it stops on one."""
    return ids[:-1] if stop_token is not None and ids and ids[-1] == stop_token else ids
