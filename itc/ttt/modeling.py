"""TTT language model: blocks, `TTTModel` and `TTTForCausalLM` (transformers + GenerationMixin).

Padding is handled once, at the model level: each sequence's real tokens
(``attention_mask == 1``) are gathered to the front ("compacted"), the blocks see ``lengths``
real tokens per row, and the outputs are scattered back (padded positions get zero hidden states
and zero logits). Left, right or any other padding therefore never touches the recurrent state.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    TokenClassifierOutput,
)

from itc.ttt.configuration import TTTConfig
from itc.ttt.layers import (
    TTT_LAYERS,
    RMSNorm,
    SlidingWindowAttention,
    SwiGLU,
    TTTLayer,
    causal_conv,
    conv_extend,
)
from itc.ttt.state import TTTCache, TTTState


class TTTBlock(nn.Module):
    """One block: RMSNorm → TTT → residual → RMSNorm → SwiGLU → residual.

    The Mamba backbone first adds RMSNorm → causal depthwise conv → residual; a hybrid
    (``attention_window``) then RMSNorm → sliding-window attention → residual.
    """

    def __init__(self, config: TTTConfig, layer_idx: int):
        super().__init__()
        D = config.hidden_size
        self.layer_idx = layer_idx
        self.pre_conv = config.pre_conv
        self.conv_kernel = config.conv_kernel
        if self.pre_conv:
            self.conv_norm = RMSNorm(D, config.rms_norm_eps)
            self.conv = nn.Conv1d(D, D, config.conv_kernel, groups=D, bias=True)
        self.window = config.attention_window
        if self.window:
            self.attn_norm = RMSNorm(D, config.rms_norm_eps)
            self.attn = SlidingWindowAttention(
                D, config.num_attention_heads, self.window, config.rope_theta
            )
        self.seq_norm = RMSNorm(D, config.rms_norm_eps)
        self.ttt: TTTLayer = TTT_LAYERS[config.ttt_layer_type](config, layer_idx)
        self.ffn_norm = RMSNorm(D, config.rms_norm_eps)
        self.mlp = SwiGLU(D, config.intermediate_size)

    def init_state(self, batch: int) -> TTTState:
        tensors = self.ttt.init_state(batch)
        if self.pre_conv:
            tensors["conv_pre"] = self.conv.weight.new_zeros(
                batch, self.conv_kernel - 1, self.conv.in_channels
            )
        if self.window:
            tensors.update(self.attn.init_state(batch))
        return TTTState(tensors)

    def forward(
        self, h: torch.Tensor, state: TTTState | None = None, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.pre_conv:
            ext, conv_state = conv_extend(
                self.conv_norm(h),
                state["conv_pre"] if state is not None else None,
                lengths,
                self.conv_kernel,
            )
            if state is not None:
                state["conv_pre"] = conv_state
            h = h + causal_conv(ext, self.conv)
        if self.window:
            h = h + self.attn(self.attn_norm(h), state=state, lengths=lengths)
        h = h + self.ttt(self.seq_norm(h), state=state, lengths=lengths)
        return h + self.mlp(self.ffn_norm(h))


class TTTPreTrainedModel(PreTrainedModel):
    config: TTTConfig
    config_class = TTTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules: ClassVar[list[str]] = ["TTTBlock"]
    _skip_keys_device_placement: ClassVar[list[str]] = ["past_key_values"]
    _is_stateful = True  # a recurrent state cannot be rolled back (no assisted decoding)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() must not build a DynamicCache; forward() creates a TTTCache on the first call.
        return False

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv1d):
            # The depthwise causal convs keep PyTorch's default init, as in the reference code
            # (N(0, 0.02) on a 4-tap depthwise kernel would all but erase q and k at the start).
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.weight.shape[1] * module.weight.shape[2])
            init.uniform_(module.bias, -bound, bound)
            return
        super()._init_weights(module)
        if isinstance(module, TTTLayer):
            for i in range(module.num_inner):
                init.normal_(
                    getattr(module, f"W{i + 1}"), mean=0.0, std=self.config.initializer_range
                )
                init.zeros_(getattr(module, f"b{i + 1}"))
            init.ones_(module.ttt_norm_weight)
            init.zeros_(module.ttt_norm_bias)
            init.zeros_(module.token_idx_offset)


def _compaction(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a (B, T) 0/1 mask: (indices of real tokens first, in order; number of real tokens)."""
    order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
    return order, mask.sum(1).long()


class TTTModel(TTTPreTrainedModel):
    """Embeddings, TTT blocks and the final RMSNorm."""

    def __init__(self, config: TTTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([TTTBlock(config, i) for i in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def init_cache(self, batch_size: int) -> TTTCache:
        """A fresh recurrent cache for ``batch_size`` sequences."""
        return TTTCache([layer.init_state(batch_size) for layer in self.layers])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: TTTCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast | tuple:
        """``attention_mask`` may cover only the new tokens or the whole sequence so far (its last
        columns are used). With a cache the forward continues from it and updates it in place."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = (
            use_cache if use_cache is not None else (self.config.use_cache and not self.training)
        )
        output_hidden_states = (
            output_hidden_states
            if output_hidden_states is not None
            else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T, D = h.shape

        cache = past_key_values
        if cache is None and use_cache:
            cache = TTTCache()
        if cache is not None:
            if not cache.is_initialized:
                cache.layers = self.init_cache(B).layers
            elif cache.batch_size != B:
                # generate(num_return_sequences=n) expands the inputs, not a cache the caller passed
                if B % cache.batch_size:
                    raise ValueError(
                        f"cache batch {cache.batch_size} does not divide input batch {B}"
                    )
                cache.batch_repeat_interleave(B // cache.batch_size)

        lengths = order = None
        if attention_mask is not None:
            mask = attention_mask[:, -T:].to(h.device)
            if not bool((mask != 0).all()):
                order, lengths = _compaction(mask)
                R = int(lengths.max())
                order = order[:, :R]
                h = h.gather(1, order[..., None].expand(-1, -1, D))

        def expand(x: torch.Tensor) -> torch.Tensor:  # back to the input layout, zeros at padding
            if order is None:
                return x
            out = x.new_zeros(B, T, x.shape[-1])
            valid = torch.arange(order.shape[1], device=x.device)[None] < lengths[:, None]
            return out.scatter(
                1, order[..., None].expand(-1, -1, x.shape[-1]), torch.where(valid[..., None], x, 0)
            )

        all_hidden = [] if output_hidden_states else None
        if h.shape[1] > 0:
            for i, layer in enumerate(self.layers):
                if all_hidden is not None:
                    all_hidden.append(expand(h))
                h = layer(h, state=cache.layers[i] if cache is not None else None, lengths=lengths)
            h = self.norm(h)
        h = expand(h)
        if all_hidden is not None:
            all_hidden.append(h)
        if cache is not None:
            cache.seen_tokens += T
        out = BaseModelOutputWithPast(
            last_hidden_state=h,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if all_hidden is not None else None,
        )
        return out if return_dict else out.to_tuple()


class TTTForCausalLM(TTTPreTrainedModel, GenerationMixin):
    """TTT language model with a recurrent `TTTCache` (constant memory per sequence)."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TTTConfig):
        super().__init__(config)
        self.model = TTTModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def init_cache(self, batch_size: int) -> TTTCache:
        return self.model.init_cache(batch_size)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: TTTCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Causal LM forward; ``labels`` are shifted inside (-100 and padding are ignored)."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        h = outputs.last_hidden_state
        slice_indices = (
            slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        )
        logits = self.lm_head(h[:, slice_indices, :])

        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, -labels.shape[1] :] == 0, -100)
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
            loss = F.cross_entropy(
                shift_logits, labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100
            )

        out = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
        )
        return out if return_dict else out.to_tuple()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        past_key_values: TTTCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """Feed only tokens the cache has not seen: the prompt first, then one token a step."""
        # generate() passes next_sequence_length=1 after the prefill (and the unseen length when it
        # is given a filled cache plus the full ids), so only the new tokens reach the cache.
        if next_sequence_length == 0:
            raise ValueError(
                "the cache has already seen every input token; prefill all but the last prompt "
                "token "
                "into it, then pass the full prompt to generate()"
            )
        model_inputs: dict = {}
        if inputs_embeds is not None and is_first_iteration:
            emb = (
                inputs_embeds[:, -next_sequence_length:] if next_sequence_length else inputs_embeds
            )
            model_inputs["inputs_embeds"] = emb
        else:
            ids = input_ids[:, -next_sequence_length:] if next_sequence_length else input_ids
            model_inputs["input_ids"] = ids.contiguous()
        model_inputs["past_key_values"] = past_key_values
        if attention_mask is not None:
            model_inputs["attention_mask"] = attention_mask
        for key in ("use_cache", "logits_to_keep", "output_hidden_states"):
            if key in kwargs:
                model_inputs[key] = kwargs[key]
        return model_inputs


class TTTForProcessRewardModel(TTTPreTrainedModel):
    """A PRM on the TTT backbone, in the Qwen2.5-Math-PRM head layout (``model.*`` and
    ``score = Sequential(Linear(h, h), ReLU, Linear(h, num_labels))``, label 1 = good step):
    it scores a chain of any length in time linear in its length. Given ``labels`` (-100
    where ignored; padding is ignored too) it returns the token-classification loss."""

    def __init__(self, config: TTTConfig):
        super().__init__(config)
        self.num_labels = getattr(config, "num_labels", 2)
        self.model = TTTModel(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, self.num_labels),
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> TokenClassifierOutput:
        h = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            return_dict=True,
        ).last_hidden_state
        logits = self.score(h)
        loss = None
        if labels is not None:
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask[:, -labels.shape[1] :] == 0, -100)
            loss = F.cross_entropy(
                logits.float().view(-1, self.num_labels), labels.view(-1), ignore_index=-100
            )
        return TokenClassifierOutput(loss=loss, logits=logits)
