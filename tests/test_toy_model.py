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


# A build small enough for a test: seconds on one core.
SMALL_SPEC = {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "train_steps": 12, "batch_size": 4, "warmup_steps": 2}
_BUILD_IN_CHILD = """
import json, sys, tempfile, torch
from pathlib import Path
from itc.toy.build import ToyPolicySpec, train_policy
threads = torch.get_num_threads()
stats = train_policy(ToyPolicySpec(**json.loads(sys.argv[1])), Path(tempfile.mkdtemp()), progress=False)
print(json.dumps({"caller_threads": threads, "after": torch.get_num_threads(), **stats}))
"""


def _build_in_child(omp_threads: str | None, spec: dict) -> dict:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if omp_threads:
        env.update(OMP_NUM_THREADS=omp_threads, MKL_NUM_THREADS=omp_threads)
    out = subprocess.run(
        [sys.executable, "-c", _BUILD_IN_CHILD, json.dumps(spec)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_same_spec_same_weights_under_one_or_two_caller_threads():
    """A caller with one OpenMP thread (as pytest's fixtures often set) and one with two build
    bit-identical weights: the build runs on the spec's thread count, not the caller's."""
    spec = {**SMALL_SPEC, "num_threads": 1}
    one = _build_in_child("1", spec)
    two = _build_in_child("2", spec)
    assert (one["caller_threads"], two["caller_threads"]) == (1, 2)
    assert (one["after"], two["after"]) == (1, 2)  # the caller's count is given back
    assert one["numerics"]["torch_threads"] == 1 and one["numerics"]["deterministic_algorithms"]
    assert len(one["weights_sha256"]) == 64
    assert one["weights_sha256"] == two["weights_sha256"]
    assert one["final_loss"] == two["final_loss"]


def test_build_numerics_restore_the_callers_settings():
    import torch

    from itc.toy.build import build_numerics

    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.enabled)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with build_numerics(1) as numerics:
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.mkldnn.enabled
        torch.manual_seed(0)
        torch.rand(5)
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream is untouched
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.enabled) == before
    assert numerics["torch_threads"] == 1 and numerics["float32_matmul_precision"] == "highest"


def test_quality_gate_retries_the_next_seed_then_fails_naming_the_figure(tmp_path, monkeypatch):
    import pytest

    from itc.toy import build

    monkeypatch.setattr(build, "GATE_PROBLEMS", 5)
    monkeypatch.setattr(build, "GATE_ATTEMPTS", 2)
    monkeypatch.setitem(build.GATE_FLOORS, "gpt2", 0.99)  # a 12-step model cannot reach it
    spec = build.ToyPolicySpec(**SMALL_SPEC, num_threads=1, seed=4)
    with pytest.raises(build.BuildQualityError, match=r"seed 4: greedy pass@1 0\.000, seed 5: greedy pass@1 0\.000, below the floor 0\.99"):
        build.build_checked(spec, tmp_path / "out")
    monkeypatch.setitem(build.GATE_FLOORS, "gpt2", 0.0)
    info = build.build_checked(spec, tmp_path / "out")
    assert info["seed_used"] == 4 and info["quality_gate"]["passed"]
    assert [a["seed"] for a in info["attempts"]] == [4]
    assert info["quality_gate"]["metric"] == "greedy pass@1 on 5 held-out problems (seed 7)"


def test_the_cached_policy_passed_its_quality_gate(toy_policy_path):
    from itc.toy.build import GATE_FLOORS, ToyPolicySpec, quality_gate

    info = json.loads((toy_policy_path / "build_info.json").read_text())
    assert info["quality_gate"]["passed"] and len(info["weights_sha256"]) == 64
    gate = quality_gate(toy_policy_path, ToyPolicySpec(**{**info["spec"], "levels": tuple(info["spec"]["levels"])}))
    assert gate["greedy_pass@1"] == info["quality_gate"]["greedy_pass@1"] >= GATE_FLOORS["gpt2"]
