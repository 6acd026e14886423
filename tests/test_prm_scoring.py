"""PRM scoring: formats, aggregations, the transformers and vLLM backends.

Each format runs on a tiny randomly initialised checkpoint of its architecture (hidden 128,
two heads of 64, 2 layers) with the embedded world's tokenizer: a Qwen2 PRM with the
Qwen2.5-Math-PRM head, a Qwen2 causal LM (Math-Shepherd) and a Llama causal LM (RLHFlow).
Weights are drawn wider than the default init so that scores spread over (0, 1) and a
backend mismatch could not hide behind scores that all sit at 0.5. A fourth checkpoint is
built the way the toy PRM is (``model.lm_verifier``): a tiny Qwen2 LM with tied embeddings,
widened, with the verifier's layers on top (``prm.readout.build_lm_verifier``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from itc.toy.tokenizer import STEP_TAG, build_tokenizer
from itc.types import Candidate
from prm.scoring import (
    AGGREGATIONS,
    FORMATS,
    MathShepherdFormat,
    PRMInputTooLongError,
    Qwen2ForProcessRewardModel,
    QwenPRMFormat,
    RLHFlowFormat,
    aggregate,
    build_prm,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "prm"
# format -> the public config it is tested through
CONFIG_FOR = {
    "qwen_prm": "qwen2.5-math-prm-7b",
    "math_shepherd": "math-shepherd",
    "rlhflow": "rlhflow-8b",
    "toy_lm_verifier": "toy",  # the toy PRM's recipe: qwen_prm read at "\n\n", twice as wide
}
TINY = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)

PROBLEMS = [
    "Compute 3+4+5. Then add 2 ки",
    "What is 7*6 - 2?",
    "Start at 9; subtract 4; double it.",
]
CANDIDATES = [
    [
        ["3+4=7", "7+5=12", "12+2=14", "The answer is \\boxed{14}."],
        ["3+4=8", "8+5=13", "\\boxed{15}"],
    ],
    [
        ["7*6=42", "42-2=40", "\\boxed{40}"],
        ["7*6=48", "\\boxed{46}"],
        [],  # an empty candidate scores []
        ["42 - 2 = 40, so the answer is \\boxed{40}"],
    ],
    [["9-4=5", "5*2=10", "Answer: \\boxed{10}"]],
]


def _widen(model: torch.nn.Module, std: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def _tokenizer_ids(tok) -> dict:
    return dict(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """format -> path of a tiny random checkpoint (saved with the toy tokenizer)."""
    root = tmp_path_factory.mktemp("tiny_prms")
    tok = build_tokenizer()
    ids = _tokenizer_ids(tok)
    torch.manual_seed(0)
    models = {
        "qwen_prm": Qwen2ForProcessRewardModel(
            Qwen2Config(**TINY, **ids, num_labels=2, tie_word_embeddings=False)
        ),
        "math_shepherd": Qwen2ForCausalLM(Qwen2Config(**TINY, **ids, tie_word_embeddings=True)),
        "rlhflow": LlamaForCausalLM(LlamaConfig(**TINY, **ids, tie_word_embeddings=False)),
    }
    paths = {}
    for i, (fmt, model) in enumerate(models.items()):
        _widen(model, std=0.15, seed=i)
        path = root / fmt
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths[fmt] = str(path)
    paths["toy_lm_verifier"] = _lm_verifier_checkpoint(root, tok, ids)
    return paths


def _lm_verifier_checkpoint(root: Path, tok, ids: dict) -> str:
    from prm.training import from_pretrained_lm

    lm = Qwen2ForCausalLM(Qwen2Config(**{**TINY, "intermediate_size": 512}, **ids, tie_word_embeddings=True))
    with torch.no_grad():  # logits spread as a trained LM's do, so some tokens fall short
        lm.model.embed_tokens.weight.mul_(4)
    lm.save_pretrained(root / "tied_lm")
    model = from_pretrained_lm(
        str(root / "tied_lm"), extra_layers=3, freeze_base=True, lm_verifier=True,
        solution_start_id=tok.convert_tokens_to_ids("<|assistant|>"),
        step_tag_id=tok.convert_tokens_to_ids("ĊĊ"),
    )
    with torch.no_grad():  # a gentler head than the built one, so that scores spread
        model.score[0].weight[:2] *= 0.02
    path = root / "toy_lm_verifier"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def prm_config(fmt: str, path: str, backend: str) -> dict:
    """The public config for ``fmt``, pointed at the tiny checkpoint, CPU-sized."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{CONFIG_FOR[fmt]}.yaml"), resolve=True)
    cfg.update(model=path, backend=backend, dtype="float32", max_model_len=1024)
    if fmt == "math_shepherd":  # the config's ids are the Mistral tokenizer's
        cfg["format"].update(good_token_id=None, bad_token_id=None)
    cfg["vllm"].update(
        gpu_memory_utilization=0.2,
        enforce_eager=True,
        engine_kwargs={"kv_cache_memory_bytes": 64 << 20, "block_size": 32},
    )
    cfg["hf"].update(batch_size=3, device="cpu")
    return cfg


@pytest.fixture(scope="session")
def hf_prms(tiny_models):
    return {fmt: build_prm(prm_config(fmt, path, "hf")) for fmt, path in tiny_models.items()}


@pytest.fixture(scope="session")
def vllm_prms(tiny_models):
    """One vLLM engine per tiny checkpoint for the whole session."""
    return {fmt: build_prm(prm_config(fmt, path, "vllm")) for fmt, path in tiny_models.items()}


def _flat(scores):
    return [s for per_problem in scores for cand in per_problem for s in cand]


# --- aggregations -------------------------------------------------------------------------


def test_aggregate():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == pytest.approx(0.8)
    assert aggregate(s, "min") == pytest.approx(0.5)
    assert aggregate(s, "product") == pytest.approx(0.36)
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    assert all(aggregate([], how) == 0.0 for how in AGGREGATIONS)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(s, "max")


# --- formats (no model) -------------------------------------------------------------------


def test_qwen_prm_format_reads_at_each_tag():
    tok = build_tokenizer()
    tag_id = tok.convert_tokens_to_ids(STEP_TAG)
    enc = QwenPRMFormat().encode(tok, "1+1?", ["a", "b\n\nc", "d"])
    assert [enc.input_ids[p] for p in enc.positions] == [tag_id] * 3
    assert enc.input_ids.count(tag_id) == 3
    text = tok.decode(enc.input_ids)
    assert text.startswith("<|system|>Please reason step by step")
    assert "<|assistant|>a<extra_0>b\n\nc<extra_0>d<extra_0><|end|>" in text
    assert (
        not QwenPRMFormat(system_prompt=None)
        .encode(tok, "q", ["a"])
        .input_ids.count(tok.convert_tokens_to_ids("<|system|>"))
    )


def test_math_shepherd_format_reads_at_each_tag():
    tok = build_tokenizer()
    fmt = MathShepherdFormat()
    enc = fmt.encode(tok, "Q ки?", ["x=1", "y=2"])  # a tag inside the problem is not a step
    assert tok.decode(enc.input_ids) == "Q ки? Step 1: x=1 ки\nStep 2: y=2 ки"
    assert len(enc.positions) == 2
    # "ки" is four byte-level tokens here; the score is read at the last one.
    tag_ids = tok.encode("ки", add_special_tokens=False)
    for p in enc.positions:
        assert enc.input_ids[p - len(tag_ids) + 1 : p + 1] == tag_ids
    bad, good = fmt.label_token_ids(tok)
    assert tok.convert_ids_to_tokens([bad, good]) == ["-", "+"]


def test_rlhflow_format_reads_where_the_answer_is_predicted():
    tok = build_tokenizer()
    enc = RLHFlowFormat().encode(tok, "P+1", ["s1", "s2", "s3"])
    text = tok.decode(enc.input_ids)
    assert text == (
        "<|user|>P+1 s1<|assistant|>+<|end|><|user|>s2<|assistant|>+<|end|>"
        "<|user|>s3<|assistant|>+<|end|>"
    )
    assistant, plus = tok.convert_tokens_to_ids("<|assistant|>"), tok.encode("+")[-1]
    assert [enc.input_ids[p] for p in enc.positions] == [assistant] * 3
    assert [enc.input_ids[p + 1] for p in enc.positions] == [plus] * 3


def test_public_configs_are_valid():
    for fmt, name in CONFIG_FOR.items():
        cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
        assert cfg.name == name
        fmt = "qwen_prm" if fmt == "toy_lm_verifier" else fmt
        assert cfg.format.type == fmt and fmt in FORMATS
        assert cfg.aggregation in AGGREGATIONS
        assert cfg.backend in ("vllm", "hf") and cfg.trust_remote_code is False
        assert {"model", "dtype", "max_model_len", "vllm", "hf"} <= set(cfg)


# --- transformers backend -----------------------------------------------------------------


def test_qwen2_prm_checkpoint_layout(tiny_models):
    model = Qwen2ForProcessRewardModel.from_pretrained(tiny_models["qwen_prm"])
    keys = set(model.state_dict())
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= keys
    assert "model.embed_tokens.weight" in keys and not any(k.startswith("lm_head") for k in keys)
    assert model.config.architectures == ["Qwen2ForProcessRewardModel"]
    ids = torch.tensor([[5, 71, 6, 72, 6]])
    labels = torch.tensor([[-100, -100, 1, -100, 0]])
    out = model(input_ids=ids, labels=labels)
    assert out.logits.shape == (1, 5, 2) and torch.isfinite(out.loss)


@pytest.mark.parametrize("fmt", list(CONFIG_FOR))
def test_hf_scores_shape_range_and_batching(hf_prms, fmt):
    prm = hf_prms[fmt]
    before = prm.tokens_scored
    scores = prm.score(PROBLEMS, CANDIDATES)
    assert [len(p) for p in scores] == [len(c) for c in CANDIDATES]
    for per_problem, cands in zip(scores, CANDIDATES):
        assert [len(s) for s in per_problem] == [len(c) for c in cands]
    flat = _flat(scores)
    assert all(0.0 <= s <= 1.0 for s in flat)
    assert max(flat) - min(flat) > 0.1, "scores should spread (weights are widened)"
    assert prm.tokens_scored > before
    assert prm.num_parameters > 0
    # Each candidate scored alone gets the same scores as in the batch (batch_size=3
    # also splits the batch into chunks of different padded widths).
    for i, problem in enumerate(PROBLEMS):
        for j, steps in enumerate(CANDIDATES[i]):
            alone = prm.score([problem], [[steps]])[0][0]
            assert alone == pytest.approx(scores[i][j], abs=1e-5)


@pytest.mark.parametrize("fmt", list(CONFIG_FOR))
def test_hf_prefix_scores_are_causal(hf_prms, fmt):
    """A step's score depends only on the steps up to it (all three formats are causal)."""
    prm = hf_prms[fmt]
    steps = CANDIDATES[0][0]
    full = prm.score([PROBLEMS[0]], [[steps]])[0][0]
    prefix = prm.score([PROBLEMS[0]], [[steps[:2]]])[0][0]
    assert prefix == pytest.approx(full[:2], abs=1e-5)


def test_score_candidates_fills_candidates(hf_prms):
    prm = hf_prms["qwen_prm"]
    cands = [
        Candidate(text="", steps=steps, answer=None, completion_tokens=0) for steps in CANDIDATES[1]
    ]
    prm.score_candidates([PROBLEMS[1]], [cands])
    expected = prm.score([PROBLEMS[1]], [CANDIDATES[1]])[0]
    for cand, step_scores in zip(cands, expected):
        assert cand.step_scores == pytest.approx(step_scores)
        assert cand.score == pytest.approx(aggregate(step_scores, prm.aggregation))
    assert cands[2].step_scores == [] and cands[2].score == 0.0


def test_too_long_input_scores_zero_and_the_rest_is_scored(hf_prms, caplog):
    """A candidate longer than the PRM's context ends there, scored 0; the other candidates
    and problems of the same call are scored as alone."""
    prm = hf_prms["math_shepherd"]
    with pytest.raises(PRMInputTooLongError, match="max_model_len"):
        prm.encode("q", ["x" * 1100])
    fine = CANDIDATES[0][0]
    before = prm.inputs_too_long
    scores, tokens, _ = prm.score_with_usage(
        ["q", PROBLEMS[0]], [[["x" * 1100, "y"], fine], [fine]]
    )
    assert scores[0][0] == [0.0, 0.0] and prm.inputs_too_long == before + 1
    alone = prm.score([PROBLEMS[0]], [[fine]])[0][0]
    assert scores[1][0] == pytest.approx(alone, abs=1e-5)
    assert len(scores[0][1]) == len(fine) and tokens[0] > 0
    assert "exceeds max_model_len" in caplog.text


def test_build_prm_rejects_unknown_backend_and_format(tiny_models):
    cfg = prm_config("qwen_prm", tiny_models["qwen_prm"], "hf")
    with pytest.raises(ValueError, match="backend"):
        build_prm({**cfg, "backend": "tgi"})
    with pytest.raises(ValueError, match="format"):
        build_prm({**cfg, "format": {"type": "skywork"}})


# --- vLLM backend -------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.parametrize("fmt", list(CONFIG_FOR))
def test_vllm_matches_hf(vllm_prms, hf_prms, fmt):
    """The pooling runner and a plain transformers forward agree within 1e-3."""
    v = vllm_prms[fmt].score(PROBLEMS, CANDIDATES)
    h = hf_prms[fmt].score(PROBLEMS, CANDIDATES)
    assert [[len(c) for c in p] for p in v] == [[len(c) for c in p] for p in h]
    diff = max(abs(a - b) for a, b in zip(_flat(v), _flat(h)))
    print(f"{fmt}: max |vLLM - HF| = {diff:.2e}")
    assert diff < 1e-3
    assert all(0.0 <= s <= 1.0 for s in _flat(v))
    alone = vllm_prms[fmt].score([PROBLEMS[1]], [[CANDIDATES[1][0]]])[0][0]
    assert alone == pytest.approx(v[1][0], abs=1e-5)
    assert vllm_prms[fmt].num_parameters == hf_prms[fmt].num_parameters
    assert vllm_prms[fmt].tokens_scored > 0
    assert math.isclose(
        vllm_prms[fmt].aggregate(v[0][0]), aggregate(v[0][0], vllm_prms[fmt].aggregation)
    )


@pytest.mark.vllm
@pytest.mark.parametrize("fmt", list(CONFIG_FOR))
def test_vllm_scores_only_new_steps_from_its_prefix_cache(vllm_prms, hf_prms, fmt, monkeypatch):
    """``known`` leading scores: only the later steps' scores come back, the engine reads the
    scored prefix from its cache (fewer rows computed than tokens sent), and they match a
    transformers forward over the whole input."""
    prm = vllm_prms[fmt]
    steps = CANDIDATES[0][0][:3] + [f"{k}+1={k + 1}, carrying on with the sum" for k in range(14, 18)]
    prm.score([PROBLEMS[0]], [[steps[:5]]])  # the parent, scored: its prefix is now cached
    computed = []
    encode = prm.llm.encode

    def recording(prompts, *args, **kwargs):
        outputs = encode(prompts, *args, **kwargs)
        computed.extend((len(p["prompt_token_ids"]), o.outputs.data.shape[0]) for p, o in zip(prompts, outputs))
        return outputs

    monkeypatch.setattr(prm.llm, "encode", recording)
    tails, tokens, rows = prm.score_with_usage([PROBLEMS[0]], [[steps, steps[:5]]], known=[[5, 5]])
    full = hf_prms[fmt].score([PROBLEMS[0]], [[steps]])[0][0]
    assert tails[0][1] == [] and len(tails[0][0]) == 2
    assert tails[0][0] == pytest.approx(full[5:], abs=1e-3)
    assert computed and all(rows < sent for sent, rows in computed)
    assert tokens == [sum(sent for sent, _ in computed)]  # whole inputs are sent
    assert rows == [sum(r for _, r in computed)] and rows[0] < tokens[0]  # the rows vLLM computed
    _, hf_sent, hf_rows = hf_prms[fmt].score_with_usage([PROBLEMS[0]], [[steps]], known=[[5]])
    assert hf_rows == hf_sent == [computed[0][0]]  # no prefix cache: every token computed
    # every score wanted while the cache holds most of the input: scored again without it,
    # and the second pass is counted too
    computed.clear()
    again, sent, rows = prm.score_with_usage([PROBLEMS[0]], [[steps]], known=[[0]])
    assert again[0][0] == pytest.approx(full, abs=1e-3)
    assert len(computed) == 2 and sent == [2 * computed[0][0]] and rows == [sum(r for _, r in computed)]
    with pytest.raises(ValueError, match="known=8"):
        prm.score_with_usage([PROBLEMS[0]], [[steps]], known=[[8]])


@pytest.mark.vllm
def test_itc_run_scores_every_candidate_with_the_selected_prm(tmp_path, vllm_policy, hf_prms):
    import json

    from conftest import VLLM_TEST_OVERRIDES, compose_run
    from itc.runner import run_experiment

    cfg = compose_run(VLLM_TEST_OVERRIDES + ["dataset.num_problems=3", "n=2", "prm=qwen2.5-math-prm-7b"])
    assert cfg.prm.format.type == "qwen_prm"
    run_experiment(cfg, tmp_path, policy=vllm_policy, prm=hf_prms["qwen_prm"])
    records = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for rec in records:
        for cand in rec["candidates"]:
            assert len(cand["step_scores"]) == len(cand["steps"])
            assert 0.0 <= cand["score"] <= 1.0
        # scored for the record, reported apart from the strategy's compute
        assert rec["prm_tokens"] == rec["prm_flops"] == 0 and rec["scoring_prm_tokens"] > 0
        assert rec["scoring_prm_tokens_computed"] == rec["scoring_prm_tokens"]  # transformers: all of it
        assert len(rec["correct_by_selection"]) == 9 and rec["selection"] == "majority"
    assert compose_run([]).get("prm") is None  # no PRM unless one is selected

    # score_candidates=false: majority's candidates stay unscored (the demo's sweep)
    off = compose_run(VLLM_TEST_OVERRIDES + ["dataset.num_problems=3", "n=2", "prm=qwen2.5-math-prm-7b", "score_candidates=false"])
    run_experiment(off, tmp_path / "off", policy=vllm_policy, prm=hf_prms["qwen_prm"])
    records = [json.loads(x) for x in (tmp_path / "off" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(c["step_scores"] is None for r in records for c in r["candidates"])
    assert all(r["scoring_prm_tokens"] == 0 and list(r["correct_by_selection"]) == ["majority"] for r in records)
