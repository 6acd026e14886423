"""Policy backend on an in-process vLLM engine (``vllm.LLM``)."""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import json
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

from itc.errors import BackendError
from itc.policy.base import Policy, PromptConfig, SamplingConfig, request_seed
from itc.policy.reaper import child_processes, reap_on_exit
from itc.types import Completion

log = logging.getLogger(__name__)

# Engines are expensive to start (tens of seconds on a CPU), so one engine per distinct
# configuration lives for the whole process: a Hydra multirun or a test session reuses it.
_ENGINES: dict[str, Any] = {}


def shutdown_engines(timeout: float = 10.0) -> None:
    """Stop every cached engine through vLLM's own shutdown path, and wait for the
    client's background threads to end (their sockets closed) before returning."""
    for llm in list(_ENGINES.values()):
        client = llm.llm_engine.engine_core
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the engine may be dead already
            log.debug("engine shutdown failed", exc_info=True)
        thread = getattr(client, "output_queue_thread", None)
        if thread is not None and thread.is_alive():
            thread.join(timeout)
    _ENGINES.clear()
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
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        self._check_keys(prompts, request_keys)
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
                )
            )
        # One request per sample, as vLLM's own parallel sampling (n > 1) fans out: each
        # request then reports its own prefix-cache hits (num_cached_tokens), where a
        # parallel-sampling output reports one child's only.
        with engine_failures(f"policy {self.name!r}"):
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for ids in token_ids for _ in range(n)],
                [_sample_params(sp, j) for sp in params for j in range(n)],
                use_tqdm=False,
            )
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
            if c.finish_reason == "length":
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
                )
            )
        return results


def _sample_params(params: Any, j: int) -> Any:
    """The parameters of sample ``j`` of a request: a seeded request's samples get seeds
    seed + j, as vLLM's own parallel sampling gives them."""
    if params.seed is None:
        return params
    sample = params.clone()
    sample.seed = (params.seed + j) % (1 << 63)
    return sample


def _without(ids: Sequence[int], stop_token: int | None) -> Sequence[int]:
    """A sample's ids without the stop token vLLM appends when it stops on one."""
    return ids[:-1] if stop_token is not None and ids and ids[-1] == stop_token else ids
