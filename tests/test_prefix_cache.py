"""The transformers backend's prefix cache: a prompt that extends one already computed computes
only its new tokens, from a copy of the cached TTT state (or the transformer's KV cache), and
samples what a full prefill samples."""

import pytest
import torch

from itc.policy import PromptConfig, SamplingConfig
from itc.policy.hf_backend import HFPolicy
from itc.toy import generate
from itc.toy.build import ToyPolicySpec, model_config
from itc.toy.tokenizer import build_tokenizer
from itc.ttt import TTTCache, TTTConfig, TTTForCausalLM


def _save(arch: str, path) -> str:
    torch.manual_seed(0)
    tok = build_tokenizer()
    if arch == "ttt":
        config = TTTConfig(
            vocab_size=len(tok), hidden_size=64, num_attention_heads=2, num_hidden_layers=2,
            intermediate_size=128, backbone="mamba", bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        model = TTTForCausalLM(config)
    else:
        from transformers import AutoModelForCausalLM

        spec = ToyPolicySpec(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)
        model = AutoModelForCausalLM.from_config(model_config(spec, tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _policy(path: str, prefix_cache_mib: float) -> HFPolicy:
    return HFPolicy(
        "p", path, PromptConfig(), SamplingConfig(max_tokens=12, max_step_tokens=6),
        dtype="float32", max_model_len=512, prefix_cache_mib=prefix_cache_mib,
    )


@pytest.mark.parametrize("arch", ["ttt", "gpt2"])
def test_prefix_cache_computes_only_new_tokens_and_samples_the_same(tmp_path, arch, one_torch_thread):
    path = _save(arch, tmp_path / arch)
    cached, plain = _policy(path, 64), _policy(path, 0)
    problem = generate(1, seed=0)[0]
    prompt = cached.format_prompt(problem.text)
    longer = prompt + "A+5 7+5=12\n\n"
    keys = ["k1"]
    for text in (prompt, longer, longer):
        for temperature in (0.0, 1.0):
            n = 3 if temperature else 1
            a = cached.generate([text], n=n, one_step=True, temperature=temperature, request_keys=keys)[0]
            b = plain.generate([text], n=n, one_step=True, temperature=temperature, request_keys=keys)[0]
            assert [c.text for c in a] == [c.text for c in b]
            assert [c.num_tokens for c in a] == [c.num_tokens for c in b]
    n_prompt = cached.count_tokens(prompt)
    n_longer = cached.count_tokens(longer)
    # the first call computed the whole prompt; the longer prompt only its new tokens; its
    # repeat only the last token (which generate feeds)
    assert cached.prefix_cache.hits >= 3
    state = cached.prefix_cache.entries[tuple(cached.tokenizer(longer, add_special_tokens=False)["input_ids"][:-1])]
    if arch == "ttt":
        assert isinstance(state, TTTCache) and state.batch_size == 1
        # a constant-size state: the longer prefix's state is as large as the shorter one's
        short = cached.prefix_cache.entries[tuple(cached.tokenizer(prompt, add_special_tokens=False)["input_ids"][:-1])]
        assert state.nbytes() == short.nbytes()
    else:
        assert state.get_seq_length() == n_longer - 1
    newer = longer + "B-3 12-3=9\n\n"
    out = cached.generate([newer], n=2, one_step=True, request_keys=keys)[0]
    # from the longer prompt's state: its last token and the new step
    assert out[0].prompt_tokens_computed == cached.count_tokens(newer) - (n_longer - 1)
    assert out[1].prompt_tokens_computed == 1  # a fork of the first sample's state
    assert n_longer - n_prompt > 5
    full = plain.generate([longer], n=1, one_step=True, request_keys=keys)[0][0]
    assert full.prompt_tokens_computed == n_longer


def test_prefix_cache_drops_least_recent_prefixes_past_its_budget(tmp_path, one_torch_thread):
    policy = _policy(_save("ttt", tmp_path / "m"), 64)
    one = policy.prefix_cache.size(policy.model.init_cache(1))
    policy.prefix_cache.max_bytes = 2 * one
    for p in generate(4, seed=1):
        policy.generate([policy.format_prompt(p.text)], n=1, request_keys=["x"], max_tokens=2)
    assert len(policy.prefix_cache.entries) == 2 and policy.prefix_cache.nbytes <= 2 * one
