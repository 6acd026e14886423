"""The policy interface every backend implements and every strategy uses."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from itc.errors import InputError
from itc.types import Completion


@dataclass
class PromptConfig:
    """How a problem becomes a prompt for one model family (from the policy's config)."""

    chat_template: bool = True
    system_prompt: str | None = None
    # The user turn (or the whole prompt when chat_template is false); {problem} is filled in.
    template: str = "{problem}"
    step_delimiter: str = "\n\n"


@dataclass
class SamplingConfig:
    """How a policy samples, the same in every backend. A checkpoint's own
    ``generation_config`` sampling defaults (Qwen2.5's top_k=20, repetition_penalty=1.05)
    are not used: set them here to use them."""

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    repetition_penalty: float = 1.0  # 1: none
    max_tokens: int = 512  # a whole solution
    max_step_tokens: int = 128  # one step, when a strategy asks for one step


_PROMPT_CACHE_SIZE = 1 << 15
# A caller's rule to stop one sample: given the index of its prompt, its token confidences so
# far and how many of them the rule was shown before, whether to cut the sample off there.
StopRule = Callable[[int, Sequence[float], int], bool]
MAX_LOGPROBS = 20  # top log-probabilities per token a request may ask for (vLLM's default cap)  # prompts whose token ids a policy remembers


def request_seed(seed: int, key: str) -> int:
    """The sampling seed of one request: a hash of the run's seed and the request's key (the
    problem's id and the request's place in the strategy), the same in every process and on
    every machine, so a request's samples do not depend on what it is batched with."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch generator takes it


class PromptTooLongError(InputError):
    """A prompt (problem plus any steps so far) does not fit the model's context."""


class Policy(ABC):
    """A step-by-step solution writer.

    ``generate`` takes prompts made by ``format_prompt`` and returns ``n`` completions per
    prompt. With ``one_step=True`` each completion stops at the step delimiter (which is
    not included in its text); otherwise it runs to the end of the solution. With
    ``request_keys`` (one per prompt) prompt ``i`` samples under its own seed,
    ``request_seed(seed, request_keys[i])``, so its completions are the same whatever else
    is in the call (batch size, batch composition, resume points); without them the
    backend's shared random state is used. With ``logprobs=k`` each completion carries its
    tokens' confidences (:attr:`itc.types.Completion.token_confidence`, from the top ``k``
    log-probabilities at each token). With ``stop_when`` as well (backends that stream:
    ``supports_stop_rule``), a sample is cut off inside the generation as soon as
    ``stop_when(prompt index, its token confidences so far, how many were seen before)`` is
    true (``finish_reason`` "stopped"; the engine computes nothing more for it).
    """

    supports_stop_rule: bool = False
    concurrent_calls: bool = False  # generate may be called from several threads at once (servers)

    name: str
    seed: int = 0  # the run's seed, from which request seeds are derived
    tokenizer: PreTrainedTokenizerBase
    prompt_config: PromptConfig
    sampling: SamplingConfig
    max_model_len: int

    @property
    def step_delimiter(self) -> str:
        return self.prompt_config.step_delimiter

    @property
    @abstractmethod
    def num_parameters(self) -> int:
        """Parameter count, for FLOP estimates (2 x parameters x tokens)."""

    def format_prompt(self, problem: str, prefix_steps: Sequence[str] = ()) -> str:
        """The prompt for ``problem``, continued after the steps written so far."""
        pc = self.prompt_config
        user = pc.template.format(problem=problem)
        if pc.chat_template:
            messages = []
            if pc.system_prompt:
                messages.append({"role": "system", "content": pc.system_prompt})
            messages.append({"role": "user", "content": user})
            prompt = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        else:
            prompt = user
        return prompt + "".join(step + pc.step_delimiter for step in prefix_steps)

    def encode_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids of each prompt, as the backend feeds them to the model, tokenized in one
        batch. A chat template already writes any BOS token, so special tokens are added only
        to prompts made without one. Search strategies send the same prompt to several
        calls (to count, check and generate), so recent prompts are remembered."""
        cache = self.__dict__.setdefault("_prompt_ids", {})
        todo = list(dict.fromkeys(p for p in prompts if p not in cache))
        if todo:
            add_special = not self.prompt_config.chat_template
            ids = self.tokenizer(todo, add_special_tokens=add_special)["input_ids"]
            if len(cache) + len(todo) > _PROMPT_CACHE_SIZE:
                cache.clear()
            cache.update(zip(todo, ids))
        return [cache[p] for p in prompts]

    def count_tokens(self, text: str) -> int:
        return len(self.encode_prompts([text])[0])

    def check_prompt(self, prompt: str, num_tokens: int | None = None, what: str = "") -> int:
        """Raise PromptTooLongError unless the prompt leaves room for one new token."""
        n = self.count_tokens(prompt) if num_tokens is None else num_tokens
        if n >= self.max_model_len:
            label = f" for {what}" if what else ""
            raise PromptTooLongError(
                f"prompt{label} is {n} tokens but policy {self.name!r} has a context of "
                f"{self.max_model_len} tokens (policy.max_model_len); shorten the problem "
                f"or use a model with a longer context. Prompt begins: {prompt[:120]!r}"
            )
        return n

    @abstractmethod
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
        """``n`` completions for each prompt (temperature/max_tokens default from config)."""

    def _check_keys(self, prompts: Sequence[str], request_keys: Sequence[str] | None) -> None:
        if request_keys is not None and len(request_keys) != len(prompts):
            raise ValueError(f"{len(request_keys)} request keys for {len(prompts)} prompts")

    @staticmethod
    def _check_logprobs(logprobs: int | None) -> None:
        if logprobs is not None and not 1 <= logprobs <= MAX_LOGPROBS:
            raise ValueError(f"logprobs must be between 1 and {MAX_LOGPROBS}, got {logprobs}")

    def _check_stop_rule(self, stop_when: StopRule | None, logprobs: int | None) -> None:
        if stop_when is None:
            return
        if not self.supports_stop_rule:
            raise ValueError(f"policy {self.name!r}: stopping a sample by its confidences needs the vllm backend")
        if logprobs is None:
            raise ValueError("stop_when reads token confidences: ask for logprobs too")

    def prompt_token_counts(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.encode_prompts(prompts)]

    def close(self) -> None:
        """Release the backend's resources (engines are otherwise reused in-process)."""
