"""TTT backbone: test-time-training layers and a transformers causal LM built on them.

Modules:
    ``configuration``  `TTTConfig` (model_type ``"itc_ttt"``): sizes, ``ttt_layer_type``
                       ("linear" | "mlp"), ``backbone`` ("transformer" | "mamba"), mini-batch
                       size, inner base lr, RoPE, conv.
    ``layers``         the TTT maths and layers: `TTTLinear`, `TTTMLP` (dual form for prefill and
                       training, primal reference form, exact one-token decoding from the
                       buffered mini-batch).
    ``state``          `TTTState` (one block's recurrent state, batch-first tensors) and `TTTCache`
                       (all blocks; the ``past_key_values`` of the model): copy, fork, index, stack.
    ``modeling``       `TTTBlock`, `TTTModel`, `TTTForCausalLM` (PreTrainedModel + GenerationMixin),
                       `TTTForProcessRewardModel` (a PRM head on the backbone).

Importing this package registers the config and models with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM`` (and the PRM with ``AutoModelForTokenClassification``). Maths: ``shared/docs/ttt.md`` (Sun et al., 2024, arXiv 2407.04620).
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForTokenClassification,
)

from itc.ttt.configuration import TTTConfig
from itc.ttt.layers import TTTMLP, TTTLayer, TTTLinear
from itc.ttt.modeling import (
    TTTBlock,
    TTTForCausalLM,
    TTTForProcessRewardModel,
    TTTModel,
    TTTPreTrainedModel,
)
from itc.ttt.state import TTTCache, TTTState

AutoConfig.register(TTTConfig.model_type, TTTConfig, exist_ok=True)
AutoModel.register(TTTConfig, TTTModel, exist_ok=True)
AutoModelForCausalLM.register(TTTConfig, TTTForCausalLM, exist_ok=True)
AutoModelForTokenClassification.register(TTTConfig, TTTForProcessRewardModel, exist_ok=True)

__all__ = [
    "TTTMLP",
    "TTTBlock",
    "TTTCache",
    "TTTConfig",
    "TTTForCausalLM",
    "TTTForProcessRewardModel",
    "TTTLayer",
    "TTTLinear",
    "TTTModel",
    "TTTPreTrainedModel",
    "TTTState",
]
