"""TTT language model: decoding = full forward, padding, save/load, generate(), state forks."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from itc.ttt import TTTCache, TTTConfig, TTTForCausalLM

VARIANTS = [(t, b) for t in ("linear", "mlp") for b in ("transformer", "mamba")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


VOCAB = 61


def tiny_model(
    ttt_type: str = "linear", backbone: str = "transformer", dtype=torch.float64, **kw
) -> TTTForCausalLM:
    torch.manual_seed(0)
    kw.setdefault("vocab_size", VOCAB)
    cfg = TTTConfig(
        hidden_size=64,
        num_attention_heads=2,
        num_hidden_layers=2,
        intermediate_size=128,
        ttt_layer_type=ttt_type,
        backbone=backbone,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=None,
        **kw,
    )
    model = TTTForCausalLM(cfg).to(dtype).eval()
    with (
        torch.no_grad()
    ):  # inner weights and τ' away from their near-identity init so updates matter
        for block in model.model.layers:
            for p in block.ttt.inner_params():
                p.normal_(0.0, 0.3 if p.shape[-2] > 1 else 0.1)
            block.ttt.token_idx_offset.normal_(0.0, 0.1)
            block.ttt.lr_proj.bias.fill_(2.0)
    return model


def ids_of(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def decode(model: TTTForCausalLM, ids: torch.Tensor, cache: TTTCache) -> torch.Tensor:
    """Feed ids one token at a time into the cache; logits (B, T, V)."""
    return torch.cat(
        [model(ids[:, t : t + 1], past_key_values=cache).logits for t in range(ids.shape[1])], 1
    )


@pytest.mark.parametrize("window", [0, 6])  # 6: the hybrid with sliding-window attention
@pytest.mark.parametrize("ttt_type,backbone", VARIANTS)
@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(ttt_type, backbone, window):
    model = tiny_model(ttt_type, backbone, attention_window=window)
    ids = ids_of(2, 40)
    full = model(ids).logits
    rng = random.Random(VARIANTS.index((ttt_type, backbone)))
    splits = [
        16,
        rng.randrange(1, 16),
        rng.randrange(17, 39),
    ]  # a boundary and two mid-mini-batch cuts
    for split in splits:
        cache = TTTCache()
        pre = model(ids[:, :split], past_key_values=cache).logits
        out = torch.cat([pre, decode(model, ids[:, split:], cache)], 1)
        assert (out - full).abs().max().item() < 1e-10, split
        assert cache.get_seq_length() == 40 and cache.num_tokens().tolist() == [40, 40]
    # a prefill stopped mid-mini-batch resumed with another chunk, then decoding
    cache = TTTCache()
    a = model(ids[:, :7], past_key_values=cache).logits
    b = model(ids[:, 7:30], past_key_values=cache).logits
    out = torch.cat([a, b, decode(model, ids[:, 30:], cache)], 1)
    assert (out - full).abs().max().item() < 1e-10


def pad(seqs: list[torch.Tensor], width: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    return ids, mask


@pytest.mark.parametrize("ttt_type,backbone", [("linear", "transformer"), ("mlp", "mamba")])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("window", [0, 6])
@torch.no_grad()
def test_padding_does_not_change_outputs_or_state(ttt_type, backbone, side, window):
    model = tiny_model(ttt_type, backbone, attention_window=window)
    seqs = [ids_of(1, n, seed=n)[0] for n in (11, 37, 20)]
    ids, mask = pad(seqs, 37, side)
    cache = TTTCache()
    out = model(ids, attention_mask=mask, past_key_values=cache).logits
    assert torch.equal(model(ids, attention_mask=mask, use_cache=False).logits, out)
    nxt = ids_of(3, 5, seed=9)  # continue every sequence after its padded prompt
    cont = decode(model, nxt, cache)
    assert cache.num_tokens().tolist() == [11 + 5, 37 + 5, 20 + 5]
    for i, s in enumerate(seqs):
        alone_cache = TTTCache()
        ref = model(s[None], past_key_values=alone_cache).logits[0]
        got = out[i, 37 - len(s) :] if side == "left" else out[i, : len(s)]
        assert (got - ref).abs().max().item() < 1e-10
        ref_cont = decode(model, nxt[i : i + 1], alone_cache)[0]
        assert (cont[i] - ref_cont).abs().max().item() < 1e-10
        padded = out[i, : 37 - len(s)] if side == "left" else out[i, len(s) :]
        assert not padded.any()  # padded positions get zero logits


@pytest.mark.parametrize("ttt_type,backbone", [("linear", "transformer"), ("mlp", "mamba")])
@torch.no_grad()
def test_save_load_round_trip(tmp_path, ttt_type, backbone):
    model = tiny_model(ttt_type, backbone, dtype=torch.float32)
    ids = ids_of(2, 21)
    model.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert (
        isinstance(config, TTTConfig)
        and config.ttt_layer_type == ttt_type
        and config.backbone == backbone
    )
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, TTTForCausalLM)
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()  # tied


@torch.no_grad()
def test_generate_sampling_with_constant_memory():
    model = tiny_model(dtype=torch.float32)
    prompt = ids_of(2, 7)
    sizes = {}
    for n in (10, 100):
        torch.manual_seed(0)
        out = model.generate(
            prompt,
            do_sample=True,
            num_return_sequences=3,
            max_new_tokens=n,
            min_new_tokens=n,
            return_dict_in_generate=True,
        )
        assert out.sequences.shape == (6, 7 + n)
        assert torch.equal(out.sequences[:, :7], prompt.repeat_interleave(3, 0))
        cache = out.past_key_values
        assert isinstance(cache, TTTCache) and cache.batch_size == 6
        sizes[n] = cache.nbytes()
    assert sizes[10] == sizes[100]


@torch.no_grad()
def test_generate_greedy_matches_forward_and_left_padding():
    model = tiny_model(dtype=torch.float32)
    seqs = [ids_of(1, 4, seed=3)[0], ids_of(1, 9, seed=4)[0]]
    ids, mask = pad(seqs, 9, "left")
    batched = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=20)
    for i, s in enumerate(seqs):
        seq = s[None]
        for _ in range(20):  # no cache: the whole sequence every step
            seq = torch.cat(
                [seq, model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)], 1
            )
        assert torch.equal(model.generate(s[None], do_sample=False, max_new_tokens=20), seq)
        assert torch.equal(batched[i, 9 - len(s) :], seq[0])


@torch.no_grad()
def test_generate_stop_strings():
    from itc.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    model = tiny_model(dtype=torch.float32, vocab_size=len(tok))
    prompt = torch.tensor([tok("1+2=", add_special_tokens=False)["input_ids"]])
    free = model.generate(prompt, do_sample=False, max_new_tokens=40)[0, prompt.shape[1] :]
    texts = tok.convert_ids_to_tokens(free.tolist())
    # stop at a one-character token (printable ASCII) first generated after a few steps
    stop = next(t for t in texts[3:] if len(t) == 1 and t.isascii() and t.isprintable())
    first = next(i for i, t in enumerate(texts) if stop in t)
    assert first < 39  # so stopping is observable
    out = model.generate(
        prompt, do_sample=False, max_new_tokens=40, stop_strings=[stop], tokenizer=tok
    )
    assert torch.equal(out[0, prompt.shape[1] :], free[: first + 1])


@torch.no_grad()
def test_state_copy_and_fork():
    model = tiny_model("mlp", "mamba")
    prefix, cont = ids_of(1, 21), ids_of(3, 12, seed=5)
    cache = TTTCache()
    model(prefix, past_key_values=cache)
    copy = cache.copy()
    a = decode(model, cont[:1], cache)
    b = decode(model, cont[:1], copy)
    assert torch.equal(a, b)
    # fork one prefix into 3 continuations: same as continuing 3 separate copies
    base = TTTCache()
    model(prefix, past_key_values=base)
    fork = base.repeat_interleave(3)
    assert fork.nbytes() == 3 * base.nbytes()
    forked = model(cont, past_key_values=fork).logits
    for i in range(3):
        alone = model(cont[i : i + 1], past_key_values=base.copy()).logits
        assert (forked[i] - alone[0]).abs().max().item() < 1e-12
        assert torch.equal(fork[i].layers[0]["W1"], fork.layers[0]["W1"][i : i + 1])
    # generate() from a filled cache: n continuations of one prefix
    cache = TTTCache()
    model(prefix[:, :-1], past_key_values=cache)
    # top_k=1 sampling is greedy (plain greedy refuses num_return_sequences > 1)
    out = model.generate(
        prefix,
        past_key_values=cache,
        do_sample=True,
        top_k=1,
        num_return_sequences=3,
        max_new_tokens=6,
    )
    ref = model.generate(prefix, do_sample=False, max_new_tokens=6)
    assert torch.equal(out, ref.expand(3, -1))


def test_training_step_reaches_inner_parameters():
    model = tiny_model("mlp", "mamba", dtype=torch.float32).train()
    ids = ids_of(2, 35)
    mask = torch.ones_like(ids)
    mask[0, :6] = 0
    out = model(ids, attention_mask=mask, labels=ids)
    assert out.past_key_values is None and torch.isfinite(out.loss)
    out.loss.backward()
    ttt = model.model.layers[0].ttt
    for p in (
        ttt.W1,
        ttt.W2,
        ttt.b1,
        ttt.token_idx_offset,
        ttt.lr_proj.weight,
        ttt.ttt_norm_weight,
    ):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
