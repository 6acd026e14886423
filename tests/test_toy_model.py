"""The embedded world's built policy: tokenizer and checkpoint load with transformers."""

import json

from transformers import AutoModelForCausalLM, AutoTokenizer

from itc.toy.tokenizer import build_tokenizer


def test_tokenizer_round_trip_and_single_token_delimiter(tmp_path):
    tok = build_tokenizer()
    text = "A+7 12+7=19\n\n\\boxed{19}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    tokens = tok.convert_ids_to_tokens(ids)
    assert tokens.count("ĊĊ") == 1 and "\\boxed" in tokens  # the delimiter and \boxed are single tokens
    assert tokens.count("+7") == 2  # operations are single tokens
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text, add_special_tokens=False)["input_ids"] == ids
    prompt = loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|user|>hi<|assistant|>"


def test_built_policy_is_a_small_vllm_servable_checkpoint(toy_policy_path):
    info = json.loads((toy_policy_path / "build_info.json").read_text())
    config = json.loads((toy_policy_path / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert config["n_embd"] // config["n_head"] == 64  # vLLM's CPU attention
    assert info["parameters"] < 2_000_000
    model = AutoModelForCausalLM.from_pretrained(toy_policy_path)
    assert sum(p.numel() for p in model.parameters()) == info["parameters"]


def test_both_toy_architectures_build_from_the_spec():
    from transformers import AutoModelForCausalLM as Auto

    from itc.toy.build import ToyPolicySpec, model_config

    tok = build_tokenizer()
    for arch, cls in [("gpt2", "GPT2LMHeadModel"), ("qwen2", "Qwen2ForCausalLM")]:
        model = Auto.from_config(model_config(ToyPolicySpec(architecture=arch), tok))
        assert type(model).__name__ == cls
    import pytest

    with pytest.raises(ValueError, match="unknown toy architecture"):
        model_config(ToyPolicySpec(architecture="mamba"), tok)


def test_training_examples_mask_the_prompt_and_end_in_eos():
    from itc.toy import task
    from itc.toy.build import chat_prompt, collate, encode_sft_examples

    tok = build_tokenizer()
    problems = task.generate(3, seed=0)
    prompts = [chat_prompt(tok, p.text) for p in problems]
    examples = encode_sft_examples(tok, prompts, [p.solution for p in problems])
    for (ids, labels), prompt, p in zip(examples, prompts, problems):
        n = len(tok(prompt, add_special_tokens=False)["input_ids"])  # as one string at a time
        assert labels[:n] == [-100] * n and labels[n:] == ids[n:]
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids[:n]) == prompt and tok.decode(ids[n:-1]) == p.solution
    batch = collate(examples, tok.pad_token_id)
    width = max(len(ids) for ids, _ in examples)
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum().item() == sum(len(ids) for ids, _ in examples)
