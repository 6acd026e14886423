"""Initialisations that let a PRM's new layers read its base LM's predictions.

Checking a step of the embedded world means checking each token against what the LM
predicted for it. A PRM built on a frozen Qwen2 LM (``prm.training.from_pretrained_lm``) has,
at each token, the LM's last state, which predicts the *next* token. Two ways to start the new
layers, each a plain ``Qwen2ForProcessRewardModel`` that vLLM serves like any other:

- :func:`init_previous_token_head`: the first new layer copies the token before's normalised
  last state (the LM's prediction of this token) to each token; the rest is learnt.
- :func:`build_lm_verifier`: the new layers start as the LM's own verifier, which they then
  learn from. The PRM gets twice the LM's width; the extra channels carry each token's own
  embedding (scaled down, so the frozen LM computes what it computed: its logits move by about
  2e-5) past the LM's layers, and three new layers compute, at each token, how far the LM's
  logit of the token falls below its best alternative (a previous-token copy, a comparator
  MLP, a margin MLP), then the largest such shortfall over the solution so far (an attention
  head), which the head turns into the step's score. On the embedded world that margin, the
  minimum over a step's tokens, is the best of the LM's own first-error signals
  (``python -m evals.lm_verifier`` measures them; figures in the results log, docs/results/).
"""

from __future__ import annotations

import copy
import math

import torch

from prm.scoring.modeling import Qwen2ForProcessRewardModel

# How much smaller the carried channels are than the LM's own: small enough that the LM's
# RMS norms (which average over all channels) do not see them.
TOKEN_CODE_SCALE = 1e-3
# How much the copied prediction outweighs the token's own LM state in the residual of the
# verifier's layers: it makes each token's RMS nearly constant, so the norms scale every
# token alike, and the comparator reads mostly the prediction.
PREDICTION_GAIN = 128.0
# Carried channels past the token code (a widened PRM of an LM of width d has 2d channels:
# the LM's d, the token's embedding in its d - FREE_CHANNELS main directions, then these).
FREE_CHANNELS = 8
SOLUTION_MARK, STEP_TAG, LOGIT, IN_SOLUTION, SHORTFALL, WORST = range(6)


def init_previous_token_head(
    model: Qwen2ForProcessRewardModel,
    layer: int,
    strength: float = 12.0,
    width: int | None = None,
    gain: float = 1.0,
) -> None:
    """Make ``layer`` of a Qwen2 PRM start as an exact previous-token head that copies the
    base LM's normalised last state (its prediction of the current token) forward.

    The heads that cover the first ``width`` channels (default: all) attend from each token to
    the one before: their query and key weights are 0 and their biases hold fixed vectors in
    the highest RoPE frequencies, with the query's turned back by one position, so every score
    peaks at offset 1 (at ``strength`` 12 the weight on the token before is 1.0 to float
    precision). Their value and output projections are the identity (times ``gain``) on those
    channels, and the layer's input norm is the base's final norm there, so the token before's
    normalised state (what the LM head reads) is added to each token's residual. Other heads
    keep their initialisation but write nothing at first (their output columns are 0).
    """
    cfg = model.config
    hidden = cfg.hidden_size
    width = width or hidden
    d = hidden // cfg.num_attention_heads
    if width % d:
        raise ValueError(f"width {width} is not a whole number of heads of size {d}")
    theta = _rope_frequencies(model)
    bias_k, bias_q = torch.zeros(d), torch.zeros(d)
    for i in range(min(8, d // 2)):  # the 8 fastest rotations (rotate_half pairs i, i + d/2)
        bias_k[i] = strength
        bias_q[i] = strength * math.cos(theta[i])
        bias_q[i + d // 2] = -strength * math.sin(theta[i])
    block = model.model.layers[layer]
    attn = block.self_attn
    if attn.o_proj.weight.shape != (hidden, hidden) or attn.k_proj.bias is None:
        raise ValueError(
            "model.previous_token_head needs a Qwen2 layer with q/k/v biases and as many heads "
            "for keys as for queries"
        )
    heads = width // d
    with torch.no_grad():
        for proj, bias in ((attn.q_proj, bias_q), (attn.k_proj, bias_k)):
            proj.weight[:width] = 0.0
            proj.bias[:width] = bias.repeat(heads)
        attn.v_proj.weight[:width] = 0.0
        attn.v_proj.weight[:width, :width] = torch.eye(width)
        attn.v_proj.bias[:width] = 0.0
        attn.o_proj.weight.zero_()
        attn.o_proj.weight[:width, :width] = gain * torch.eye(width)
        block.input_layernorm.weight[:width] = model.model.norm.weight[:width]


def _rope_frequencies(model: Qwen2ForProcessRewardModel) -> torch.Tensor:
    cfg = model.config
    d = cfg.hidden_size // cfg.num_attention_heads
    rope_theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta") or getattr(cfg, "rope_theta")
    return rope_theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)


def widen_with_token_code(
    model: Qwen2ForProcessRewardModel,
    base_layers: int,
    solution_start_id: int,
    step_tag_id: int | None = None,
    scale: float = TOKEN_CODE_SCALE,
) -> Qwen2ForProcessRewardModel:
    """The same PRM at twice the width, whose extra channels carry, unchanged through the
    first ``base_layers`` (the LM's) layers and times ``scale``: each token's embedding in its
    main directions, whether the token is ``solution_start_id`` (the token that opens the
    solution in the PRM's input, e.g. ``<|assistant|>``) and whether it is ``step_tag_id``.

    The LM's weights fill the first half of every matrix and 0 the rest, so its layers read
    and write only the first half. RMS norms average over all channels, so their weights are
    scaled by sqrt(1/2) and their epsilon halved, which keeps the LM's normalised states exact
    up to the carried channels' share (about ``scale`` squared). Layers above ``base_layers``
    and the head are initialised afresh. Needs tied embeddings (the LM head's vector of a
    token is then its embedding).
    """
    cfg = model.config
    if not getattr(cfg, "tie_word_embeddings", False):
        raise ValueError("model.lm_verifier needs a base LM with tied input and output embeddings")
    d = cfg.hidden_size
    code = d - FREE_CHANNELS
    wide_cfg = copy.deepcopy(cfg)
    wide_cfg.hidden_size = 2 * d
    wide_cfg.num_attention_heads = 2 * cfg.num_attention_heads  # the head size stays
    wide_cfg.num_key_value_heads = 2 * cfg.num_key_value_heads
    wide_cfg.rms_norm_eps = cfg.rms_norm_eps / 2
    wide = Qwen2ForProcessRewardModel(wide_cfg)
    shrink = math.sqrt(0.5)
    with torch.no_grad():
        embed = model.model.embed_tokens.weight
        directions = code_directions(embed)
        wide_embed = torch.zeros_like(wide.model.embed_tokens.weight)
        wide_embed[:, :d] = embed
        wide_embed[:, d : d + code] = scale * embed @ directions
        wide_embed[solution_start_id, d + code + SOLUTION_MARK] = scale
        if step_tag_id is not None:
            wide_embed[step_tag_id, d + code + STEP_TAG] = scale
        wide.model.embed_tokens.weight.copy_(wide_embed)
        for src, dst in zip(model.model.layers[:base_layers], wide.model.layers):
            for name in ("q_proj", "k_proj", "v_proj"):
                s, t = getattr(src.self_attn, name), getattr(dst.self_attn, name)
                t.weight.zero_()
                t.bias.zero_()
                t.weight[: s.weight.shape[0], :d] = s.weight
                t.bias[: s.weight.shape[0]] = s.bias
            o = dst.self_attn.o_proj.weight
            o.zero_()
            o[:d, : src.self_attn.o_proj.weight.shape[1]] = src.self_attn.o_proj.weight
            for name in ("gate_proj", "up_proj"):
                t = getattr(dst.mlp, name).weight
                t.zero_()
                t[:, :d] = getattr(src.mlp, name).weight
            down = dst.mlp.down_proj.weight
            down.zero_()
            down[:d] = src.mlp.down_proj.weight
            for name in ("input_layernorm", "post_attention_layernorm"):
                w = getattr(dst, name).weight
                w.zero_()
                w[:d] = getattr(src, name).weight * shrink
        wide.model.norm.weight[:d] = model.model.norm.weight * shrink
        wide.model.norm.weight[d:] = shrink
    return wide


def code_directions(embed: torch.Tensor) -> torch.Tensor:
    """The main directions of the token embeddings, (d, d - FREE_CHANNELS): the carried code
    drops only the weakest (0.1% of the toy LM's embedding energy)."""
    return torch.linalg.svd(embed.detach(), full_matrices=False).Vh[: embed.shape[1] - FREE_CHANNELS].T


def build_lm_verifier(
    model: Qwen2ForProcessRewardModel,
    base_layers: int,
    solution_start_id: int,
    step_tag_id: int | None = None,
    margin: float = 2.5,
    threshold: float = 0.25,
) -> Qwen2ForProcessRewardModel:
    """A widened copy of ``model`` (a PRM of a frozen LM with at least three new layers)
    whose new layers and head start as the LM's own verifier.

    Channels (LM width d, k = d - FREE_CHANNELS): the LM's d; the token's embedding in its k
    main directions; then SOLUTION_MARK and STEP_TAG (marks of those tokens), and what the
    layers write: LOGIT (the LM's logit of this token), IN_SOLUTION (1 after the solution's
    opening token), SHORTFALL (how far other tokens' logits exceed this one's by more than
    ``margin``, summed), WORST (the largest SHORTFALL over the solution so far). Layer by layer:

    1. a previous-token head adds PREDICTION_GAIN times the LM's normalised state of the
       token before (which makes every token's RMS nearly the same); its MLP, in unit pairs
       silu(a) b - silu(-a) b = a b, computes the prediction's dot product with the token's
       embedding: LOGIT;
    2. a head whose score grows with the distance after the opening token sets IN_SOLUTION;
       the MLP computes sum_v silu(2 (logit_v - LOGIT - margin)) / 2 times IN_SOLUTION, 0 at
       step tags: SHORTFALL, about 0 when the LM ranks the token first or nearly so;
    3. a head whose keys favour large SHORTFALL at solution tokens (not the opening token)
       reads out their soft maximum: WORST.

    The head scores a step good with probability sigmoid(16 (``threshold`` - WORST)), its
    logit clipped to at most 12 below the top. Unused heads and MLP units write nothing at
    first (their output weights are 0) but train; ``freeze_new_layers`` keeps them as built.
    """
    cfg = model.config
    d = cfg.hidden_size
    if len(model.model.layers) < base_layers + 3:
        raise ValueError("model.lm_verifier needs model.extra_layers >= 3")
    wide = widen_with_token_code(model, base_layers, solution_start_id, step_tag_id)
    hidden = wide.config.hidden_size
    head = hidden // wide.config.num_attention_heads
    code = d - FREE_CHANNELS
    free = d + code
    scale, gain = TOKEN_CODE_SCALE, PREDICTION_GAIN
    rms = gain * math.sqrt(d / hidden)  # each token's RMS in the new layers, nearly constant
    slow = head // 2 - 1  # the slowest RoPE pair (slow, slow + head/2): positions barely turn it
    embed = model.model.embed_tokens.weight.detach()
    directions = code_directions(embed)
    g = model.model.norm.weight.detach()  # the LM's final norm: its head reads g * n
    layers = wide.model.layers
    with torch.no_grad():
        for block in layers[base_layers:]:  # new layers write nothing unless set below
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
            block.input_layernorm.weight.zero_()
            block.post_attention_layernorm.weight.zero_()

        # 1. previous-token copy (unweighted normalised state n, |n|^2 = d) and comparator
        first = layers[base_layers]
        init_previous_token_head(wide, base_layers, width=d, gain=gain)
        first.input_layernorm.weight[:d] = math.sqrt(d / hidden)
        first.input_layernorm.weight[d:] = 0.0
        ln = first.post_attention_layernorm.weight
        ln[:d] = 1.0
        ln[d:free] = 1.0 / scale
        mlp = first.mlp
        units = torch.arange(code)
        for sign, unit in ((1.0, units), (-1.0, units + code)):
            mlp.gate_proj.weight[unit] = 0.0
            mlp.up_proj.weight[unit] = 0.0
            mlp.gate_proj.weight[unit, :d] = sign * (g[:, None] * directions).T
            mlp.up_proj.weight[unit, d + units] = 1.0
            # sum_i a_i b_i = gain * logit / rms^2: times rms^2 / gain it is the logit
            mlp.down_proj.weight[free + LOGIT, unit] = sign * rms**2 / gain

        # 2. in-solution flag (strictly after the opening token) and the logit's shortfall
        second = layers[base_layers + 1]
        second.input_layernorm.weight[free + SOLUTION_MARK] = 1.0 / scale
        attn = second.self_attn
        h = 2 * head  # third head: the solution flag
        # Query and key in one RoPE pair a quarter turn apart score A sin(distance * theta):
        # 0 at the opening token itself, rising with distance after it (theta is slow
        # enough that it keeps rising over 1,024 positions).
        pair = head // 2 - 8
        theta = float(_rope_frequencies(wide)[pair])
        if theta * wide.config.max_position_embeddings > math.pi / 2:
            raise ValueError("model.lm_verifier: max_position_embeddings is too long for its RoPE")
        _constant_query(attn, h, head, pair, 1.0)
        attn.k_proj.weight[h + pair + head // 2] = 0.0
        # score 30 one token after the mark (A = 30 / sin(theta) with the 1/sqrt(head) scaling)
        attn.k_proj.weight[h + pair + head // 2, free + SOLUTION_MARK] = (
            30.0 * math.sqrt(head) / math.sin(theta) * rms
        )
        attn.v_proj.weight[h] = 0.0
        attn.v_proj.weight[h, free + SOLUTION_MARK] = rms
        attn.o_proj.weight[free + IN_SOLUTION, h] = 1.0
        ln = second.post_attention_layernorm.weight
        ln[free + STEP_TAG] = 1.0 / scale
        ln[:d] = 1.0
        ln[free + LOGIT] = 1.0
        ln[free + IN_SOLUTION] = 1.0
        mlp = second.mlp
        vocab = embed.shape[0]
        if mlp.gate_proj.weight.shape[0] < vocab or first.mlp.gate_proj.weight.shape[0] < 2 * code:
            raise ValueError(f"model.lm_verifier needs intermediate_size >= {max(vocab, 2 * code)}")
        sharp = 2.0
        units = torch.arange(vocab)
        mlp.gate_proj.weight[units] = 0.0
        mlp.gate_proj.weight[units, :d] = (sharp * rms / gain) * (embed * g)
        mlp.gate_proj.weight[units, free + LOGIT] = -sharp * rms
        mlp.gate_proj.weight[units, free + IN_SOLUTION] = -sharp * margin * rms  # 1 in the solution
        mlp.up_proj.weight[units] = 0.0
        # 0 before the solution, and at step tags: the score is read there, and the LM
        # expects its end-of-text, not a tag, after the last step
        mlp.up_proj.weight[units, free + IN_SOLUTION] = rms
        mlp.up_proj.weight[units, free + STEP_TAG] = -rms
        mlp.down_proj.weight[free + SHORTFALL, units] = 1.0 / sharp

        # 3. soft maximum of the shortfall over the solution's tokens so far
        third = layers[base_layers + 2]
        third.input_layernorm.weight[free + SHORTFALL] = 1.0
        third.input_layernorm.weight[free + IN_SOLUTION] = 1.0
        third.input_layernorm.weight[free + SOLUTION_MARK] = 1.0 / scale
        attn = third.self_attn
        h = 3 * head
        _constant_query(attn, h, head, slow, 16.0)
        attn.k_proj.weight[h + slow] = 0.0
        attn.k_proj.weight[h + slow, free + SHORTFALL] = 5.0 * rms  # score 10 per unit
        attn.k_proj.weight[h + slow, free + IN_SOLUTION] = 15.0 * rms  # 30 inside the solution
        attn.k_proj.weight[h + slow, free + SOLUTION_MARK] = -30.0 * rms  # but not the mark
        attn.v_proj.weight[h] = 0.0
        attn.v_proj.weight[h, free + SHORTFALL] = rms
        attn.o_proj.weight[free + WORST, h] = 1.0

        # head: P(good) = sigmoid(slope * (threshold - WORST)), clipped to logits in
        # [slope * threshold - CLIP, slope * threshold] by two ReLU units (so no token's loss
        # is huge when the LM, not the solution, is wrong), and learnt from there
        wide.model.norm.weight[free + WORST] = rms
        first_linear, last_linear = wide.score[0], wide.score[2]
        slope, clip = 16.0, 12.0
        for unit, offset in ((0, 0.0), (1, -clip)):
            first_linear.weight[unit] = 0.0
            first_linear.weight[unit, free + WORST] = slope
            first_linear.bias[unit] = offset
        last_linear.weight[:, :2] = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])
        last_linear.bias.copy_(torch.tensor([-0.5 * slope * threshold, 0.5 * slope * threshold]))
    return wide


def _constant_query(attn: torch.nn.Module, head_start: int, head_size: int, slot: int, value: float) -> None:
    """A query that is ``value`` in one slot of a head whatever the token (and no key bias)."""
    rows = slice(head_start, head_start + head_size)
    attn.q_proj.weight[rows] = 0.0
    attn.q_proj.bias[rows] = 0.0
    attn.q_proj.bias[head_start + slot] = value
    attn.k_proj.bias[rows] = 0.0
