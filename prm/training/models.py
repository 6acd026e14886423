"""The models a PRM trains from: a fresh backbone, or a causal LM given a 2-class head."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from prm.readout import build_lm_verifier, init_previous_token_head
from prm.scoring.modeling import Qwen2ForProcessRewardModel

BACKBONES = ("qwen2", "ttt")


def init_model(
    backbone: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int = 2048,
    ttt_layer_type: str = "linear",
    seed: int = 0,
) -> PreTrainedModel:
    """A freshly initialised PRM with a 2-class head: the Qwen2.5-Math-PRM layout on a Qwen2
    backbone (servable by vLLM), or a TTT backbone (linear-time scoring; transformers only)."""
    torch.manual_seed(seed)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if backbone == "qwen2":
        config = Qwen2Config(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_position_embeddings,
            num_labels=2,
            tie_word_embeddings=False,
            **ids,
        )
        return Qwen2ForProcessRewardModel(config)
    if backbone == "ttt":
        from itc.ttt import TTTConfig, TTTForProcessRewardModel

        config = TTTConfig(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            ttt_layer_type=ttt_layer_type,
            num_labels=2,
            **ids,
        )
        return TTTForProcessRewardModel(config)
    raise ValueError(f"backbone={backbone!r} is not one of {', '.join(BACKBONES)}")


def from_pretrained_lm(
    path: str,
    trust_remote_code: bool = False,
    extra_layers: int = 0,
    freeze_base: bool = False,
    previous_token_head: bool = False,
    lm_verifier: bool = False,
    solution_start_id: int | None = None,
    step_tag_id: int | None = None,
    freeze_new_layers: bool = False,
) -> PreTrainedModel:
    """A PRM initialised from a causal LM checkpoint: a Qwen2 LM becomes the
    Qwen2.5-Math-PRM layout (backbone kept, new head); another architecture gets
    transformers' token-classification head with 2 labels.

    ``extra_layers`` (Qwen2 only) stacks freshly initialised layers on the LM's: at each
    token they can read the LM's last-layer state of the token before, i.e. its prediction
    of this token, which is what checking a step needs (a tiny LM cannot pass its own
    prediction on within its own depth). ``previous_token_head`` starts the first of them as
    the head that does that (:func:`prm.readout.init_previous_token_head`). ``lm_verifier``
    instead starts the new layers (at least 3) and the head as the LM's own verifier, at twice
    the LM's width (:func:`prm.readout.build_lm_verifier`); ``solution_start_id`` is the token
    that opens the solution in the PRM's input, ``step_tag_id`` the step tag's token.
    ``freeze_new_layers`` trains only the head (and the final norm) on top of them.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if config.model_type == "qwen2":
        config.num_labels = 2
        config.architectures = ["Qwen2ForProcessRewardModel"]
        base_layers = config.num_hidden_layers
        if extra_layers:
            config.num_hidden_layers += extra_layers
            if getattr(config, "layer_types", None):
                config.layer_types = list(config.layer_types) + [config.layer_types[-1]] * extra_layers
        model = Qwen2ForProcessRewardModel.from_pretrained(path, config=config)
        if previous_token_head and not extra_layers:
            raise ValueError("model.previous_token_head needs model.extra_layers >= 1")
        if lm_verifier:
            if solution_start_id is None:
                raise ValueError("model.lm_verifier needs the id of the token that opens the solution")
            model = build_lm_verifier(model, base_layers, solution_start_id, step_tag_id)
        elif previous_token_head:
            init_previous_token_head(model, base_layers)
        if freeze_base:
            for module in [model.model.embed_tokens, *model.model.layers[:base_layers]]:
                module.requires_grad_(False)
        if freeze_new_layers:
            for module in model.model.layers[base_layers:]:
                module.requires_grad_(False)
        return model
    if extra_layers or freeze_base or previous_token_head or lm_verifier or freeze_new_layers:
        raise ValueError(
            "model.extra_layers, model.freeze_base, model.freeze_new_layers, model.previous_token_head "
            "and model.lm_verifier need a Qwen2 "
            f"base, not {config.model_type!r}"
        )
    return AutoModelForTokenClassification.from_pretrained(
        path, num_labels=2, trust_remote_code=trust_remote_code
    )


def load_tokenizer(name: str | None, base: str | None, trust_remote_code: bool = False):
    """``toy`` = the embedded world's tokenizer; else a path or hub id (default: the base's)."""
    if name == "toy" or (name is None and base is None):
        from itc.toy.tokenizer import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name or base, trust_remote_code=trust_remote_code)


# Base LMs of the embedded world: name -> the build of the toy LM trained on reference
# solutions (itc.toy.build, cached). A PRM starts from an LM of the policy's family, as
# Qwen2.5-Math-PRM starts from Qwen2.5-Math. toy-qwen2-4k trains 4,000 steps instead of
# 1,300, so it takes about three times as long to build; its own token probabilities find
# first errors better (python -m evals.lm_verifier --lm toy-qwen2-4k against --lm toy-qwen2;
# a PRM built on it: itc-train-prm name=verif4k model.base=toy-qwen2-4k, then itc-eval-prm
# prm.model=<its checkpoint>; figures in the results log, docs/results/). The longer build
# is why it is not the default.
TOY_BASES = {
    "toy-qwen2": {"architecture": "qwen2", "train_steps": 1300},
    "toy-qwen2-4k": {"architecture": "qwen2", "train_steps": 4000},
}


def resolve_base(base: str) -> str:
    """``toy-qwen2`` (or ``toy-qwen2-4k``) names an embedded world's Qwen2 LM (built on first
    use, with a progress bar); any other name or path is kept."""
    if base in TOY_BASES:
        from itc.toy.build import ToyPolicySpec, policy_path

        return str(policy_path(ToyPolicySpec(**TOY_BASES[base]), progress=True))
    return base


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str | None, key: str) -> int:
    ids = tokenizer(token or "", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"{key}={token!r} is not one token of the tokenizer (it gives {ids}); "
            "model.lm_verifier needs the solution's opening token and the step tag as single tokens"
        )
    return ids[0]


def make_model(
    m: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int, step_tag: str | None = None
) -> PreTrainedModel:
    """The model to train from the ``model`` config: a base causal LM, or a fresh backbone.
    ``step_tag`` is the scoring format's step tag (``model.lm_verifier`` uses it)."""
    torch.manual_seed(seed)  # the new head's initialisation
    if m.get("base"):
        return from_pretrained_lm(
            resolve_base(m["base"]),
            m.get("trust_remote_code", False),
            m.get("extra_layers", 0),
            m.get("freeze_base", False),
            m.get("previous_token_head", False),
            m.get("lm_verifier", False),
            _token_id(tokenizer, m.get("solution_start_token"), "model.solution_start_token") if m.get("lm_verifier") else None,
            _token_id(tokenizer, step_tag, "format.step_tag") if m.get("lm_verifier") and step_tag else None,
            m.get("freeze_new_layers", False),
        )
    return init_model(
        m["backbone"],
        tokenizer,
        hidden_size=m["hidden_size"],
        num_layers=m["num_layers"],
        num_heads=m["num_heads"],
        intermediate_size=m["intermediate_size"],
        max_position_embeddings=m["max_position_embeddings"],
        ttt_layer_type=m.get("ttt_layer_type", "linear"),
        seed=seed,
    )
