"""`TTTConfig`: the transformers configuration of the TTT language model."""

from __future__ import annotations

from typing import ClassVar

from transformers import PretrainedConfig

TTT_LAYER_TYPES = ("linear", "mlp")
BACKBONES = ("transformer", "mamba")


class TTTConfig(PretrainedConfig):
    """Configuration of `TTTForCausalLM` (model_type ``"itc_ttt"``).

    Fields beyond the usual decoder ones:
        ttt_layer_type: ``"linear"`` (TTT-Linear) or ``"mlp"`` (TTT-MLP: hidden ``4 * head_dim``,
            GELU).
        backbone: ``"transformer"`` (RMSNorm → TTT → residual → RMSNorm → SwiGLU → residual) or
            ``"mamba"`` (adds a causal depthwise conv before the TTT layer, shares the Q/K
            projection
            with separate causal convs for q and k, and gates the output with ``gelu(x W_g)``).
        mini_batch_size: tokens per inner-loop gradient step (b, 16 in the paper).
        ttt_base_lr: η_base; ``None`` picks the paper's default (1.0 Linear, 0.1 MLP).
        rope_theta: RoPE base for q and k; positions are taken modulo ``mini_batch_size``.
        conv_kernel: kernel size of the Mamba backbone's causal convs.
        use_gate: output gate; ``None`` means on for the Mamba backbone, off otherwise.
        attention_window: a hybrid: each block adds a causal sliding-window attention over this
            many tokens before its TTT layer (its state: the window's keys and values, constant
            in the length); 0 for none.
    """

    model_type = "itc_ttt"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    vocab_size: int = 32000
    hidden_size: int = 768
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    ttt_layer_type: str = "linear"
    backbone: str = "transformer"
    mini_batch_size: int = 16
    ttt_base_lr: float | None = None
    rope_theta: float = 10000.0
    conv_kernel: int = 4
    use_gate: bool | None = None
    attention_window: int = 0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.ttt_layer_type not in TTT_LAYER_TYPES:
            raise ValueError(
                f"ttt_layer_type must be one of {TTT_LAYER_TYPES}, got {self.ttt_layer_type!r}"
            )
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.attention_window < 0:
            raise ValueError(f"attention_window must be >= 0, got {self.attention_window}")
        if self.ttt_base_lr is None:
            self.ttt_base_lr = 1.0 if self.ttt_layer_type == "linear" else 0.1
        if self.use_gate is None:
            self.use_gate = self.backbone == "mamba"
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def pre_conv(self) -> bool:
        return self.backbone == "mamba"

    @property
    def share_qk(self) -> bool:
        return self.backbone == "mamba"
