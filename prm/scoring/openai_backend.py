"""PRM backend on vLLM servers' ``/pooling`` endpoint: ``prm.backend=openai``.

For token-classification PRMs (``qwen_prm`` format: Qwen2.5-Math-PRM's layout, the toy PRM)
served with ``--runner pooling --pooler-config '{"task": "token_classify", "pooling_type":
"ALL"}'`` (``itc-serve`` does this). Each input goes as token ids and comes back as one
[p(bad), p(good)] row per token; the rows at the format's positions are the scores, as in the
in-process backend (:mod:`prm.scoring.vllm_backend`).

Prefix reuse: the server's pooling API takes no ``skip_reading_prefix_cache`` and vLLM then
skips the prefix cache for token-wise pooling, so every input is computed whole; with
``known`` steps the scores of the new steps only are returned, as in-process, and the
tokens computed equal the tokens sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import AutoTokenizer

from itc.errors import InputError
from itc.serving import Endpoint, EndpointPool, MalformedResponse, ServingConfig
from prm.scoring.base import PRM, Scored
from prm.scoring.formats import Encoded, PRMFormat
from prm.scoring.modeling import count_parameters

POOLING_TASK = "token_classify"
INPUTS_PER_REQUEST = 16  # inputs per /pooling request; requests run at once over the endpoints


class OpenAIPRM(PRM):
    """A PRM whose model runs behind one or more vLLM servers."""

    concurrent_calls = True  # score may be called from several threads at once

    def __init__(
        self,
        name: str,
        model: str,
        format: PRMFormat,
        serving: ServingConfig,
        *,
        served_model: str,
        tokenizer: str | None = None,
        max_model_len: int = 4096,
        aggregation: str = "min",
        trust_remote_code: bool = False,
        **_: Any,  # the in-process backends' settings (dtype): the server's business
    ) -> None:
        if format.head != "classifier":
            raise InputError(
                f"prm {name!r}: prm.backend=openai serves token-classification PRMs (format qwen_prm); "
                f"this PRM's format reads an LM head: use prm.backend=vllm"
            )
        tok = AutoTokenizer.from_pretrained(tokenizer or model, trust_remote_code=trust_remote_code)
        super().__init__(name, format, tok, max_model_len=max_model_len, aggregation=aggregation)
        self.served_model = served_model
        self._model_path = model
        self._trust_remote_code = trust_remote_code
        self._num_parameters: int | None = None
        self.pool = EndpointPool(f"prm {name!r}", serving)
        try:
            self.pool.check_model(served_model)
        except BaseException:
            self.pool.close()
            raise

    @property
    def num_parameters(self) -> int:
        if self._num_parameters is None:
            self._num_parameters = count_parameters(self._model_path, self.format.head, self._trust_remote_code)
        return self._num_parameters

    def _score_encoded(self, encoded: Sequence[Encoded], reuse_prefix: bool = False) -> Scored:
        chunks = [list(encoded[s : s + INPUTS_PER_REQUEST]) for s in range(0, len(encoded), INPUTS_PER_REQUEST)]
        answers = self.pool.gather([self._request(chunk) for chunk in chunks])
        scores = [s for answer in answers for s in answer]
        sent = [len(e.input_ids) for e in encoded]
        return Scored(scores, sent, list(sent))

    def _request(self, chunk: list[Encoded]):
        body = {"model": self.served_model, "input": [e.input_ids for e in chunk], "task": POOLING_TASK}

        async def call(endpoint: Endpoint) -> list[list[float]]:
            r = await endpoint.http.post("/pooling", json=body)
            r.raise_for_status()
            try:
                answer = r.json()
            except ValueError as e:
                raise MalformedResponse(f"not JSON: {r.text[:200]!r}") from e
            return _scores(answer, chunk)

        return call

    def close(self) -> None:
        self.pool.close()


def _scores(answer: Any, chunk: list[Encoded]) -> list[list[float]]:
    """The good-class probability at each input's positions, checked against the inputs."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list) or len(data) != len(chunk):
        count = len(data) if isinstance(data, list) else "no"
        raise MalformedResponse(f"{count} pooling results for {len(chunk)} inputs")
    out = []
    for e, item in zip(chunk, sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)):
        rows = item.get("data") if isinstance(item, dict) else None
        if not isinstance(rows, list) or len(rows) != len(e.input_ids):
            count = len(rows) if isinstance(rows, list) else "no"
            raise MalformedResponse(
                f"{count} token rows for an input of {len(e.input_ids)} tokens (is the server started "
                f"with --pooler-config '{{\"task\": \"token_classify\", \"pooling_type\": \"ALL\"}}'?)"
            )
        try:
            out.append([float(rows[p][1]) for p in e.positions])
        except (TypeError, IndexError, ValueError) as exc:
            raise MalformedResponse(f"token rows are not [p(bad), p(good)] pairs: {rows[:2]!r:.200}") from exc
    return out
