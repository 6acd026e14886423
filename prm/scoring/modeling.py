"""A transformers implementation of ``Qwen2ForProcessRewardModel`` (Qwen2.5-Math-PRM).

transformers has no such class (the hub checkpoints ship it as remote code). This one loads
the same checkpoint layout as the public Qwen2.5-Math-PRM and vLLM's ``qwen2_rm.py``: a Qwen2
backbone under ``model.*`` and a head ``score = Sequential(Linear(h, h), ReLU, Linear(h, 2))``
(``score.0.*``, ``score.2.*``, both with biases). Given ``labels`` (-100 where ignored) it
returns a token-classification loss, so Trainer/TRL can train it.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
    PreTrainedModel,
    Qwen2Config,
    Qwen2Model,
    Qwen2PreTrainedModel,
)
from transformers.modeling_outputs import TokenClassifierOutput

import itc.ttt  # noqa: F401  (registers the TTT backbone, PRM included, with the Auto classes)

PRM_ARCHITECTURE = "Qwen2ForProcessRewardModel"


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    """Qwen2 backbone + 2-layer token-classification head (label 1 = good step)."""

    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"^lm_head\."]

    def __init__(self, config: Qwen2Config) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, config.num_labels),
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        ).last_hidden_state
        logits = self.score(hidden)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.float().view(-1, self.num_labels), labels.view(-1), ignore_index=-100
            )
        return TokenClassifierOutput(loss=loss, logits=logits)


def classifier_class(config) -> type[PreTrainedModel]:
    """Our class for the Qwen2.5-Math-PRM layout, else transformers' token classifier."""
    if PRM_ARCHITECTURE in (getattr(config, "architectures", None) or []):
        return Qwen2ForProcessRewardModel
    return AutoModelForTokenClassification  # type: ignore[return-value]


def load_model(
    path: str, head: str, dtype: str = "auto", trust_remote_code: bool = False
) -> PreTrainedModel:
    """The PRM checkpoint at ``path`` for a format's head (``classifier`` or ``lm``)."""
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    if head == "classifier":
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        cls = classifier_class(config)
    else:
        cls = AutoModelForCausalLM  # type: ignore[assignment]
    return cls.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code)


def count_parameters(path: str, head: str, trust_remote_code: bool = False) -> int:
    """Parameter count of a PRM checkpoint without loading its weights (meta device)."""
    from accelerate import init_empty_weights

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with init_empty_weights():
        if head == "classifier":
            cls = classifier_class(config)
            model = cls(config) if cls is Qwen2ForProcessRewardModel else cls.from_config(config)
        else:
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    model.tie_weights()  # not done under init_empty_weights; tied weights count once
    return sum(p.numel() for p in model.parameters())
