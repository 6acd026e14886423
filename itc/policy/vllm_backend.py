"""Policy backend on an in-process vLLM engine (``vllm.LLM``)."""

from __future__ import annotations

import atexit
import gc
import json
import logging
from collections.abc import Sequence
from typing import Any

from itc.policy.base import Policy, PromptConfig, SamplingConfig
from itc.types import Completion

log = logging.getLogger(__name__)

# Engines are expensive to start (tens of seconds on a CPU), so one engine per distinct
# configuration lives for the whole process: a Hydra multirun or a test session reuses it.
_ENGINES: dict[str, Any] = {}


def shutdown_engines() -> None:
    """Stop every cached engine (runs at exit, before logging closes its streams)."""
    for llm in _ENGINES.values():
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    _ENGINES.clear()
    gc.collect()


atexit.register(shutdown_engines)


def get_engine(**engine_kwargs: Any):
    """A process-wide ``vllm.LLM`` for these arguments (started on first use)."""
    from vllm import LLM

    key = json.dumps(engine_kwargs, sort_keys=True, default=str)
    if key not in _ENGINES:
        log.info("Starting vLLM engine for %s", engine_kwargs.get("model"))
        _ENGINES[key] = LLM(**engine_kwargs)
    return _ENGINES[key]


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
    ) -> None:
        self.name = name
        self.prompt_config = prompt
        self.sampling = sampling
        self.max_model_len = max_model_len
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

    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        one_step: bool = False,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        if not prompts:
            return []
        temperature = self.sampling.temperature if temperature is None else temperature
        if max_tokens is None:
            max_tokens = self.sampling.max_step_tokens if one_step else self.sampling.max_tokens
        delimiter = self.step_delimiter
        params = []
        for p in prompts:
            used = self.check_prompt(p)
            params.append(
                SamplingParams(
                    n=n,
                    temperature=temperature,
                    top_p=self.sampling.top_p if temperature > 0 else 1.0,
                    max_tokens=max(1, min(max_tokens, self.max_model_len - used)),
                    stop=[delimiter] if one_step else None,
                )
            )
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        results = []
        for out in outputs:
            completions = []
            for c in out.outputs:
                if c.finish_reason == "length":
                    reason = "length"
                elif c.stop_reason == delimiter:
                    reason = "step"
                else:
                    reason = "eos"
                completions.append(
                    Completion(
                        text=c.text,
                        num_tokens=len(c.token_ids),
                        finished=reason == "eos",
                        finish_reason=reason,
                    )
                )
            results.append(completions)
        return results
