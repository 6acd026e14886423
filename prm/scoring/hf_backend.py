"""PRM backend on a transformers forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from prm.scoring.base import PRM, Scored
from prm.scoring.formats import Encoded, PRMFormat
from prm.scoring.modeling import load_model


class HFPRM(PRM):
    """Scores with a transformers model: a token classifier (``classifier`` formats) or a
    causal LM whose good/bad token logits are computed only at the score positions."""

    def __init__(
        self,
        name: str,
        model: str | PreTrainedModel,
        format: PRMFormat,
        *,
        tokenizer: str | PreTrainedTokenizerBase | None = None,
        dtype: str = "auto",
        max_model_len: int = 4096,
        aggregation: str = "min",
        device: str | None = None,
        batch_size: int = 8,
        trust_remote_code: bool = False,
    ) -> None:
        tok = tokenizer if tokenizer is not None else model
        if not isinstance(tok, PreTrainedTokenizerBase):
            if not isinstance(tok, str):
                raise TypeError("pass a tokenizer with an in-memory model")
            tok = AutoTokenizer.from_pretrained(tok, trust_remote_code=trust_remote_code)
        super().__init__(name, format, tok, max_model_len=max_model_len, aggregation=aggregation)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        if isinstance(model, str):
            model = load_model(model, format.head, dtype, trust_remote_code)
        self.model = model.to(self.device).eval()
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        if format.head == "lm":
            self._label_ids = torch.tensor(format.label_token_ids(tok), device=self.device)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @torch.no_grad()
    def _score_encoded(self, encoded: Sequence[Encoded], reuse_prefix: bool = False) -> Scored:
        results: list[list[float]] = [[] for _ in encoded]
        # Longest first: similar lengths share a batch, so little padding.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(encoded[i].input_ids) for i in chunk)
            ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            rows, cols = [], []
            for b, i in enumerate(chunk):
                e = encoded[i]
                ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
                mask[b, : len(e.input_ids)] = 1  # right padding keeps real tokens' positions
                rows += [b] * len(e.positions)
                cols += e.positions
            probs = self._good_probs(ids.to(self.device), mask.to(self.device), rows, cols).tolist()
            k = 0
            for i in chunk:
                n = len(encoded[i].positions)
                results[i] = probs[k : k + n]
                k += n
        sizes = [len(e.input_ids) for e in encoded]  # no cache: every input token is computed
        return Scored(results, sizes, list(sizes))

    def _good_probs(
        self, ids: torch.Tensor, mask: torch.Tensor, rows: list[int], cols: list[int]
    ) -> torch.Tensor:
        if self.format.head == "classifier":
            logits = self.model(input_ids=ids, attention_mask=mask).logits[rows, cols].float()
        else:
            # Only two rows of the LM head are needed (a full-vocabulary logits tensor would
            # dominate memory). Models that rescale logits (softcapping) are not covered.
            hidden = self.model.base_model(
                input_ids=ids, attention_mask=mask, use_cache=False
            ).last_hidden_state
            head = self.model.get_output_embeddings()
            logits = hidden[rows, cols].float() @ head.weight[self._label_ids].float().T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[self._label_ids].float()
        return torch.softmax(logits, dim=-1)[:, 1].cpu()
