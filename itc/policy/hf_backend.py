"""Policy backend on transformers ``generate`` (same interface as the vLLM backend)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

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
        delimiter = self.step_delimiter
        results: list[list[Completion]] = []
        per_call = 1 if request_keys is not None else max(1, self.batch_size // max(1, n))
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            room = self.max_model_len - max(lengths[start : start + per_call])
            enc = self.tokenizer(
                chunk, return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            kwargs = dict(
                max_new_tokens=max(1, min(max_tokens, room)),
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(eos_ids),
            )
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
                kwargs.update(stop_strings=[delimiter], tokenizer=self.tokenizer)
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
