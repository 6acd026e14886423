"""Policy backend on transformers ``generate`` (same interface as the vLLM backend)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GenerationConfig,
)

import itc.ttt  # noqa: F401  (registers TTT checkpoints with the Auto classes)
from itc.policy.base import Policy, PromptConfig, SamplingConfig, StopRule, request_seed
from itc.types import Completion


def count_parameters_from_config(model_path: str) -> int:
    """Parameter count of a checkpoint without loading its weights (meta device)."""
    from accelerate import init_empty_weights

    config = AutoConfig.from_pretrained(model_path)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # tied embeddings count once (they are not tied on the meta device)
    return sum(p.numel() for p in model.parameters())


class HFPolicy(Policy):
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
        device: str | None = None,
        batch_size: int = 64,
        trust_remote_code: bool = False,
        prefix_cache_mib: float = 0,
    ) -> None:
        self.name = name
        self.prompt_config = prompt
        self.sampling = sampling
        self.max_model_len = max_model_len
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(
            tokenizer or model, trust_remote_code=trust_remote_code
        )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code
        ).to(self.device)
        self.model.eval()
        # Sample as vLLM does, from SamplingConfig alone: generate() fills every setting left
        # at its default from the checkpoint's generation_config (Qwen2.5-Math-Instruct's
        # top_k=20, repetition_penalty=1.05), so keep only its special token ids.
        own = self.model.generation_config
        self.model.generation_config = GenerationConfig(
            bos_token_id=own.bos_token_id, eos_token_id=own.eos_token_id, pad_token_id=own.pad_token_id
        )
        self.seed = seed
        torch.manual_seed(seed)
        self.prefix_cache = PrefixCache(self.model, prefix_cache_mib)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        return ids

    @torch.no_grad()
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
        """As :meth:`Policy.generate`. With ``request_keys`` each prompt is generated in a
        call of its own under its own seed (transformers samples from one global generator,
        and a row's logits shift by rounding with the batch's padding), so its completions
        do not depend on the other prompts; without them prompts are batched."""
        self._check_keys(prompts, request_keys)
        self._check_logprobs(logprobs)
        self._check_stop_rule(stop_when, logprobs)
        temperature = self.sampling.temperature if temperature is None else temperature
        if max_tokens is None:
            max_tokens = self.sampling.max_step_tokens if one_step else self.sampling.max_tokens
        lengths = [self.check_prompt(p) for p in prompts]
        eos_ids = self._eos_ids()
        results: list[list[Completion]] = []
        per_call = 1 if request_keys is not None else max(1, self.batch_size // max(1, n))
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            if request_keys is not None and self.prefix_cache.enabled:
                results.append(
                    self._generate_from_prefix(
                        chunk[0], n, request_keys[start], eos_ids, one_step, temperature,
                        max_tokens, lengths[start], logprobs,
                    )
                )
                continue
            room = self.max_model_len - max(lengths[start : start + per_call])
            enc = self.tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            kwargs = self._generate_kwargs(temperature, one_step, logprobs)
            kwargs.update(max_new_tokens=max(1, min(max_tokens, room)), num_return_sequences=n)
            if request_keys is None:
                out = self.model.generate(**enc, **kwargs)
            else:
                devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(request_seed(self.seed, request_keys[start]))
                    out = self.model.generate(**enc, **kwargs)
            confs = None
            if logprobs is not None:
                top = torch.stack(out.logits, dim=1).float().log_softmax(-1).topk(logprobs, dim=-1).values
                confs = (-top.mean(-1)).tolist()  # (sequences, new tokens)
                out = out.sequences
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            for i in range(len(chunk)):
                # no prefix cache: each of the n sequences computes its whole prompt
                computed = lengths[start + i]
                row = []
                for j in range(n):
                    c = self._completion(new[i * n + j], eos_ids, one_step, computed)
                    if confs is not None:
                        c.token_confidence = confs[i * n + j][: c.num_tokens]
                    row.append(c)
                results.append(row)
        return results

    def _generate_kwargs(self, temperature: float, one_step: bool, logprobs: int | None) -> dict:
        """``generate()`` settings shared by every call (sampling, stopping, logits)."""
        kwargs: dict = {"pad_token_id": self.tokenizer.pad_token_id, "eos_token_id": sorted(self._eos_ids())}
        if logprobs is not None:  # the raw logits, as vLLM's default logprobs mode
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        if temperature > 0:
            kwargs.update(
                do_sample=True,
                temperature=temperature,
                top_p=self.sampling.top_p,
                top_k=self.sampling.top_k or None,
            )
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.sampling.repetition_penalty != 1.0:
            kwargs.update(repetition_penalty=self.sampling.repetition_penalty)
        if one_step:
            kwargs.update(stop_strings=[self.step_delimiter], tokenizer=self.tokenizer)
        return kwargs

    def _generate_from_prefix(
        self, prompt: str, n: int, key: str, eos_ids: set[int], one_step: bool,
        temperature: float, max_tokens: int, length: int, logprobs: int | None,
    ) -> list[Completion]:
        """n samples of one prompt, continuing the cached state of its longest cached prefix
        (:class:`PrefixCache`): only the rest of the prompt is computed."""
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        cache, computed = self.prefix_cache.prefill(ids)
        kwargs = self._generate_kwargs(temperature, one_step, logprobs)
        kwargs["max_new_tokens"] = max(1, min(max_tokens, self.max_model_len - length))
        input_ids = torch.tensor([ids] * n, device=self.device)
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(request_seed(self.seed, key))
            out = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                past_key_values=self.prefix_cache.fork(cache, n), **kwargs,
            )
        confs = None
        if logprobs is not None:
            top = torch.stack(out.logits, dim=1).float().log_softmax(-1).topk(logprobs, dim=-1).values
            confs = (-top.mean(-1)).tolist()
            out = out.sequences
        new = out[:, len(ids) :].tolist()
        row = []
        for j in range(n):
            # the prompt is computed once; every further sample forks its state and computes
            # only the last prompt token, which generate() feeds to each row
            c = self._completion(new[j], eos_ids, one_step, computed if j == 0 else 1)
            if confs is not None:
                c.token_confidence = confs[j][: c.num_tokens]
            row.append(c)
        return row

    def _completion(self, ids: list[int], eos_ids: set[int], one_step: bool, prompt_tokens: int) -> Completion:
        """One sample's completion from its new ids. Generation stops at the first eos token
        or, for one step, at the delimiter; what follows is padding, and the padding of a
        tokenizer whose pad is its eos (Qwen2.5, Llama 3) reads as an eos, so the delimiter
        is looked for before the first eos, not after."""
        delimiter = self.step_delimiter
        end = next((k for k, tok in enumerate(ids) if tok in eos_ids), None)
        body = ids if end is None else ids[:end]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if one_step and delimiter in text:
            text = text[: text.index(delimiter)]
            # keep the tokens up to and including the delimiter, as vLLM counts them
            keep = next(
                k
                for k in range(1, len(body) + 1)
                if delimiter in self.tokenizer.decode(body[:k], skip_special_tokens=True)
            )
            ids, reason = body[:keep], "step"
        elif end is not None:
            ids, reason = ids[: end + 1], "eos"
        else:
            reason = "length"
        return Completion(
            text=text,
            num_tokens=len(ids),
            finished=reason == "eos",
            finish_reason=reason,
            prompt_tokens_computed=prompt_tokens,
        )


class PrefixCache:
    """The model's cache after prompts already computed, keyed by their token ids, so that a
    prompt extending one of them (a search's beam one step further) computes only its new
    tokens. A recurrent model (``TTTForCausalLM``) keeps its constant-size state per prefix
    and a beam forks by copying it; a transformer keeps a KV cache per prefix, which grows with
    it. Least recently used prefixes are dropped past ``max_mib`` (0: no cache)."""

    def __init__(self, model: torch.nn.Module, max_mib: float) -> None:
        self.model = model
        self.max_bytes = int(max_mib * 2**20)
        self.entries: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self.nbytes = 0
        self.hits = self.tokens_saved = 0
        self.recurrent = hasattr(model, "init_cache")

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @staticmethod
    def size(cache) -> int:
        if hasattr(cache, "nbytes"):
            return cache.nbytes()
        return sum(
            t.numel() * t.element_size()
            for layer in cache.layers
            for t in (layer.keys, layer.values)
            if t is not None
        )

    def _copy(self, cache):
        return cache.copy() if self.recurrent else copy.deepcopy(cache)

    def lookup(self, ids: Sequence[int]) -> tuple[int, object | None]:
        """The longest cached prefix of ``ids`` (shorter than ``ids``): its length and cache."""
        for length in sorted({len(k) for k in self.entries}, reverse=True):
            if length < len(ids) and (key := tuple(ids[:length])) in self.entries:
                self.entries.move_to_end(key)
                return length, self.entries[key]
        return 0, None

    def store(self, ids: Sequence[int], cache) -> None:
        key = tuple(ids)
        if key in self.entries:
            return
        self.entries[key] = cache
        self.nbytes += self.size(cache)
        while self.nbytes > self.max_bytes and len(self.entries) > 1:
            _, old = self.entries.popitem(last=False)
            self.nbytes -= self.size(old)

    @torch.no_grad()
    def prefill(self, ids: Sequence[int]):
        """The cache after all of ``ids`` but the last token (which ``generate`` feeds), from
        the longest cached prefix; stored for later prompts. Returns it and the number of
        prompt tokens computed (the last one included)."""
        length, hit = self.lookup(ids)
        if hit is None:
            cache = self.model.init_cache(1) if self.recurrent else DynamicCache()
        else:
            cache = self._copy(hit)
            self.hits += 1
            self.tokens_saved += length
        rest = list(ids[length:-1])
        if rest:
            device = self.model.device
            self.model(input_ids=torch.tensor([rest], device=device), past_key_values=cache, use_cache=True)
        if self.recurrent:
            cache.seen_tokens = len(ids) - 1
        self.store(ids[:-1], cache)
        return cache, len(ids) - length

    def fork(self, cache, n: int):
        """A copy of ``cache`` for ``n`` continuations (the stored one stays as it is)."""
        if self.recurrent:
            return cache.repeat_interleave(n)
        out = copy.deepcopy(cache)
        if n > 1:
            out.batch_repeat_interleave(n)
        return out
