"""PRM backend on vLLM's pooling runner (``LLM(runner="pooling")`` + ``encode``).

Every format runs as a ``token_classify`` task with ALL pooling: vLLM returns each prompt
token's class probabilities and we pick the rows at the format's positions (computed on our
side from the same token ids the transformers backend uses). ALL pooling, unlike STEP,
keeps chunked prefill available for long inputs.

- ``classifier`` formats (Qwen2.5-Math-PRM) use vLLM's native ``Qwen2ForProcessRewardModel``,
  whose 2-class head yields ``softmax(logits)`` per token.
- ``lm`` formats (Math-Shepherd, RLHFlow) are causal LMs. ``convert="embed"`` would drop the
  LM head and return hidden-state entries, so instead the model is converted with
  ``convert="classify"`` and ``hf_overrides={"method": "no_post_processing",
  "classifier_from_token": [bad, good]}``: vLLM copies those two rows of the LM head into a
  2-label classifier, whose softmax is exactly the softmax over the bad/good token logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import AutoTokenizer

from itc.policy.vllm_backend import engine_failures, get_engine
from prm.scoring.base import PRM, Scored
from prm.scoring.formats import Encoded, PRMFormat
from prm.scoring.modeling import count_parameters

POOLING_TASK = "token_classify"


class VLLMPRM(PRM):
    def __init__(
        self,
        name: str,
        model: str,
        format: PRMFormat,
        *,
        tokenizer: str | None = None,
        dtype: str = "auto",
        max_model_len: int = 4096,
        aggregation: str = "min",
        seed: int = 0,
        gpu_memory_utilization: float = 0.4,
        enforce_eager: bool = False,
        tensor_parallel_size: int = 1,
        trust_remote_code: bool = False,
        engine_kwargs: dict[str, Any] | None = None,
        env: dict[str, Any] | None = None,
    ) -> None:
        from vllm.config import PoolerConfig

        tok = AutoTokenizer.from_pretrained(tokenizer or model, trust_remote_code=trust_remote_code)
        super().__init__(name, format, tok, max_model_len=max_model_len, aggregation=aggregation)
        kwargs: dict[str, Any] = dict(
            model=model,
            tokenizer=tokenizer or model,
            runner="pooling",
            pooler_config=PoolerConfig(task=POOLING_TASK, pooling_type="ALL"),
            dtype=dtype,
            max_model_len=max_model_len,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            tensor_parallel_size=tensor_parallel_size,
            trust_remote_code=trust_remote_code,
        )
        if format.head == "lm":
            bad, good = format.label_token_ids(tok)
            kwargs.update(
                convert="classify",
                hf_overrides={
                    "method": "no_post_processing",
                    # vLLM looks these up with convert_tokens_to_ids: pass vocabulary strings.
                    "classifier_from_token": tok.convert_ids_to_tokens([bad, good]),
                },
            )
        kwargs.update(engine_kwargs or {})
        self.llm = get_engine(env=env, **kwargs)
        self._model_path = model
        self._trust_remote_code = trust_remote_code
        self._num_parameters: int | None = None

    @property
    def num_parameters(self) -> int:
        if self._num_parameters is None:
            self._num_parameters = count_parameters(
                self._model_path, self.format.head, self._trust_remote_code
            )
        return self._num_parameters

    def _score_encoded(self, encoded: Sequence[Encoded], reuse_prefix: bool = False) -> Scored:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        # vLLM skips its prefix cache for token-wise pooling unless told otherwise, since
        # tokens read from the cache get no output rows. Here only the rows of each input's
        # last tokens are needed, so reading it is safe: the rows returned are those of the
        # input's final tokens, and an input whose cached prefix covered a needed position
        # is scored again without the cache.
        prompts = [TokensPrompt(prompt_token_ids=e.input_ids) for e in encoded]
        with engine_failures(f"prm {self.name!r}"):
            outputs = self.llm.encode(
                prompts,
                pooling_params=PoolingParams(skip_reading_prefix_cache=not reuse_prefix),
                pooling_task=POOLING_TASK,
                use_tqdm=False,
            )
        results: list[list[float]] = []
        sent = [len(e.input_ids) for e in encoded]
        computed = []  # the rows vLLM returned: one per token it computed
        again = []
        for k, (e, out) in enumerate(zip(encoded, outputs)):
            probs = out.outputs.data  # [computed tokens, 2]: (bad, good) per token
            skipped = len(e.input_ids) - probs.shape[0]  # tokens read from the prefix cache
            if skipped < 0 or (skipped and not reuse_prefix):
                raise RuntimeError(f"vLLM pooled {probs.shape[0]} rows for {len(e.input_ids)} tokens")
            computed.append(probs.shape[0])
            if e.positions and e.positions[0] < skipped:
                again.append(k)
                results.append([])
                continue
            results.append(probs[[p - skipped for p in e.positions], 1].float().tolist())
        if again:  # scored again without the cache: counted again, sent and computed
            redo = self._score_encoded([encoded[k] for k in again])
            for k, scores, s, c in zip(again, redo.scores, redo.sent, redo.computed):
                results[k] = scores
                sent[k] += s
                computed[k] += c
        return Scored(results, sent, computed)
