"""prm.training and itc-train-prm / itc-eval-prm: data, targets, models, and the real pipeline end to end
(sampling through vLLM, training with transformers' Trainer, scoring with vLLM and HF)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_TRAIN, TRAINED_PRM_OVERRIDES, VLLM_TEST_OVERRIDES, compose_app, prm_config
from itc.toy import generate
from itc.toy.tokenizer import build_tokenizer
from prm.data import StepLabelled
from prm.scoring import QwenPRMFormat
from prm.training import IGNORE, build_examples, orm_label, soft_cross_entropy


def toy_record(steps: list[str] | None = None) -> StepLabelled:
    p = generate(1, seed=3, levels=(2,))[0]
    steps = steps or p.reference_steps()
    from itc.toy import task

    return StepLabelled(
        p.text, steps, [float(x) for x in task.step_labels(p, steps)], str(p.answer), "toy"
    )


# --- training inputs and loss ---------------------------------------------------------------


def test_prm_targets_sit_on_the_step_tags_and_orm_only_on_the_last():
    tok = build_tokenizer()
    fmt = QwenPRMFormat(system_prompt=None)
    good = toy_record()
    bad = toy_record(good.steps[:1] + ["B+1 1+1=3"] + good.steps[2:])
    prm_ex = build_examples([good], tok, fmt, "prm")[0][0]
    orm_ex = build_examples([good], tok, fmt, "orm")[0][0]
    tag = tok.convert_tokens_to_ids("<extra_0>")
    at = [i for i, t in enumerate(prm_ex.input_ids) if t == tag]
    assert len(at) == len(good.steps)
    assert [prm_ex.labels[i] for i in at] == good.labels
    assert sum(x != IGNORE for x in prm_ex.labels) == len(good.steps)
    assert [i for i, x in enumerate(orm_ex.labels) if x != IGNORE] == [at[-1]]
    assert orm_ex.labels[at[-1]] == 1.0
    bad_prm = build_examples([bad], tok, fmt, "prm")[0][0]
    assert [x for x in bad_prm.labels if x != IGNORE] == [1.0] + [0.0] * (len(bad.steps) - 1)
    # The ORM's label is the outcome: wrong steps that still reach the answer count as right.
    assert orm_label(good) == orm_label(bad) == 1.0
    assert orm_label(toy_record(good.steps[:-1] + ["\\boxed{99}"])) == 0.0
    long, n_skipped = build_examples([good], tok, fmt, "prm", max_length=5)
    assert long == [] and n_skipped == 1
    with pytest.raises(ValueError, match="objective"):
        build_examples([good], tok, fmt, "outcome")


def test_dense_toy_labels_mark_where_a_step_goes_wrong():
    tok = build_tokenizer()
    fmt = QwenPRMFormat(step_tag="\n\n", system_prompt=None)
    rec = StepLabelled(
        problem="Start at 7 and do A+5 B-3.",
        steps=["A+5 7+5=12", "B-3 12-3=8", "\\boxed{8}"],
        labels=[1.0, 0.0, 0.0],
    )
    (sparse,), _ = build_examples([rec], tok, fmt, "prm")
    (dense,), _ = build_examples([rec], tok, fmt, "prm", dense_toy_labels=True)
    assert dense.input_ids == sparse.input_ids
    tags = [i for i, y in enumerate(sparse.labels) if y != IGNORE]
    assert [dense.labels[i] for i in tags] == rec.labels  # the step tags keep their labels
    pieces = [(tok.decode([t]), y) for t, y in zip(dense.input_ids, dense.labels) if y != IGNORE]
    text = "".join(p for p, _ in pieces)
    assert text == "A+5 7+5=12\n\nB-3 12-3=8\n\n\\boxed{8}\n\n"
    wrong_from = text.index("=8") + 1
    seen = 0
    for piece, y in pieces:  # right up to the "8" that should be a "9", wrong from there on
        assert y == (1.0 if seen < wrong_from else 0.0), (piece, seen)
        seen += len(piece)
    other = StepLabelled(problem="What is 1+1?", steps=["2"], labels=[1.0], source="prm800k")
    (plain,), _ = build_examples([other], tok, fmt, "prm", dense_toy_labels=True)
    assert sum(y != IGNORE for y in plain.labels) == 1  # other sources: step tags only

    # LM hints: every position's "probability" is 0.5 here; blended in while on track
    half = lambda seqs: [[0.5] * len(s) for s in seqs]  # noqa: E731
    (hinted,), _ = build_examples([rec], tok, fmt, "prm", dense_toy_labels=True, token_hints=half, hint_weight=0.4)
    assert [hinted.labels[i] for i in tags] == rec.labels
    dense_hinted = [y for i, y in enumerate(hinted.labels) if y != IGNORE and i not in tags]
    dense_plain = [y for i, y in enumerate(dense.labels) if y != IGNORE and i not in tags]
    first_wrong = dense_plain.index(0.0)
    assert dense_hinted[:first_wrong] == pytest.approx([0.6 * 1 + 0.4 * 0.5] * first_wrong)
    assert dense_hinted[first_wrong] == pytest.approx(0.4 * 0.5)  # the first wrong token: its hint
    assert dense_hinted[first_wrong + 1 :] == [0.0] * (len(dense_plain) - first_wrong - 1)


def test_lm_token_probabilities_are_the_causal_lms_own(hf_policy):
    from prm.training import lm_token_probabilities

    ids = hf_policy.tokenizer("Start at 3 and do A+2.", add_special_tokens=False)["input_ids"]
    short = ids[:5]
    probs = lm_token_probabilities(hf_policy.model, batch_size=2)([ids, short, ids])
    assert probs[0] == probs[2] and len(probs[0]) == len(ids) and probs[0][0] == 1.0
    assert probs[1] == pytest.approx(probs[0][:5], abs=1e-5)  # padding does not leak in
    with torch.no_grad():
        logp = torch.log_softmax(hf_policy.model(torch.tensor([ids])).logits[0], -1)
    assert probs[0][3] == pytest.approx(logp[2, ids[3]].exp().item(), rel=1e-4)


def test_soft_cross_entropy_is_cross_entropy_for_hard_labels_and_ignores_the_rest():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 2)
    targets = torch.full((2, 5), IGNORE)
    targets[0, 1], targets[1, 3], targets[1, 4] = 1.0, 0.0, 1.0
    hard = torch.nn.functional.cross_entropy(
        logits[targets != IGNORE], targets[targets != IGNORE].long()
    )
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(hard.item(), abs=1e-6)
    targets[1, 4] = 0.25  # a soft label: cross-entropy against (0.75, 0.25)
    logp = torch.log_softmax(logits[1, 4], -1)
    want = (hard * 3 - (-logp[1])  + -(0.25 * logp[1] + 0.75 * logp[0])) / 3
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(want.item(), abs=1e-6)


# --- configs ------------------------------------------------------------------------------


def test_train_and_eval_configs_compose():
    cfg = compose_app("train_prm", ["objective=orm", "model.backbone=ttt"])
    assert cfg.objective == "orm" and cfg.output_dir.endswith("prm/toy-orm")
    assert cfg.format.type == "qwen_prm" and cfg.policy.name == "toy"
    ev = compose_app("eval_prm", ["prm=toy-orm"])
    assert ev.prm.model == "toy-orm" and ev.prm.aggregation == "last"
    assert ev.prm.format.system_prompt is None


def test_a_qwen2_lm_becomes_the_qwen_prm_layout_with_its_backbone(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prm.training import from_pretrained_lm

    tok = build_tokenizer()
    lm = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                    num_attention_heads=1, num_key_value_heads=1, pad_token_id=tok.pad_token_id)
    )
    lm.save_pretrained(tmp_path)
    prm = from_pretrained_lm(str(tmp_path))
    assert type(prm).__name__ == "Qwen2ForProcessRewardModel" and prm.config.num_labels == 2
    assert torch.equal(prm.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    assert torch.equal(prm.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
    ids = torch.tensor([[1, 2, 3]])
    assert prm(input_ids=ids).logits.shape == (1, 3, 2)


def test_previous_token_head_copies_the_lms_last_state_to_the_next_token(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from prm.training import from_pretrained_lm

    tok = build_tokenizer()
    torch.manual_seed(0)
    Qwen2ForCausalLM(
        Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    ).save_pretrained(tmp_path)
    prm = from_pretrained_lm(str(tmp_path), extra_layers=2, previous_token_head=True).eval()
    prm.config._attn_implementation = "eager"  # so the attention weights come back
    ids = tok("Start at 7 and do A+5 B-3.\n\nA+5 7+5=12\n\nB-3 12-3=9\n\n\\boxed{9}", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = prm.model(ids, output_attentions=True, output_hidden_states=True)
    n = ids.shape[1]
    weights = out.attentions[2][0]  # the first new layer: (heads, query, key)
    on_previous = weights[:, torch.arange(1, n), torch.arange(n - 1)]
    assert on_previous.min() > 0.999
    # its output adds the token before's state, normalised as the LM head reads it
    layer = prm.model.layers[2]
    before = out.hidden_states[2][0]
    added = layer.self_attn.o_proj.weight @ layer.input_layernorm(before)[:-1].T
    assert torch.allclose(added.T, prm.model.norm(before)[:-1], atol=1e-5)
    assert not torch.equal(prm.model.layers[3].self_attn.q_proj.weight, torch.zeros_like(prm.model.layers[3].self_attn.q_proj.weight))
    with pytest.raises(ValueError, match="extra_layers"):
        from_pretrained_lm(str(tmp_path), previous_token_head=True)
    # the train_prm config's key reaches it (with lm_verifier off), and is on by default
    from prm.training import make_model

    m = dict(compose_app("train_prm", ["model.lm_verifier=false", "model.freeze_new_layers=false"]).model)
    assert m["previous_token_head"] is True
    m.update(base=str(tmp_path), extra_layers=1)
    built = make_model(m, tok, seed=0)
    assert torch.equal(built.model.layers[2].self_attn.k_proj.bias, prm.model.layers[2].self_attn.k_proj.bias)
    assert not built.model.layers[0].self_attn.q_proj.weight.requires_grad  # freeze_base still applies


# --- the real pipeline --------------------------------------------------------------------


@pytest.mark.vllm
def test_itc_train_prm_writes_a_checkpoint_and_report(trained_prm):
    out, report = trained_prm
    assert (out / "checkpoint" / "config.json").exists()
    assert json.loads((out / "checkpoint" / "config.json").read_text())["architectures"] == [
        "Qwen2ForProcessRewardModel"
    ]
    saved = json.loads((out / "train_report.json").read_text())
    assert saved["examples"] == report["examples"] == saved["data"]["records"] > 24
    # every step tag, and (dense_toy_labels) every token of the toy steps
    assert saved["labelled_positions"] > saved["data"]["steps"]
    assert 0.0 < saved["data"]["good_step_fraction"] < 1.0  # the policy's samples have errors
    assert not (out / "trainer").exists()  # intermediate Trainer checkpoints are cleaned up
    assert list((out / "data").glob("toy-*.jsonl"))  # sampled data cached for reruns


@pytest.mark.vllm
def test_a_finished_training_is_kept_and_a_rerun_does_not_retrain(trained_prm):
    from prm.training.pipeline import train_from_config

    out, report = trained_prm
    mtime = (out / "checkpoint" / "model.safetensors").stat().st_mtime
    cfg = compose_app("train_prm", TRAINED_PRM_OVERRIDES + [f"output_dir={out}", f"data.cache={out}/data"])
    assert train_from_config(cfg, release_engines=False)["train_loss"] == report["train_loss"]
    assert (out / "checkpoint" / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.vllm
def test_a_finished_training_with_another_recipe_is_retrained(trained_prm, tmp_path):
    import shutil

    from prm.training.pipeline import train_from_config

    out, report = trained_prm
    shutil.copytree(out / "checkpoint", tmp_path / "checkpoint")
    shutil.copy(out / "train_report.json", tmp_path / "train_report.json")
    base = TRAINED_PRM_OVERRIDES + [f"output_dir={tmp_path}", f"data.cache={out}/data"]
    kept = train_from_config(compose_app("train_prm", base + ["training.disable_tqdm=false"]), release_engines=False)
    assert kept["train_loss"] == report["train_loss"]  # a setting outside the recipe: kept
    again = train_from_config(compose_app("train_prm", base + ["training.max_steps=3"]), release_engines=False)
    assert again["config"]["training"]["max_steps"] == 3  # retrained with the new recipe
    assert json.loads((tmp_path / "train_report.json").read_text())["config"]["training"]["max_steps"] == 3


@pytest.mark.vllm
def test_the_toy_prm_quality_gate_names_the_figure_below_its_floor(trained_prm):
    from prm.training.pipeline import PRMQualityError, quality_gate

    out, _ = trained_prm
    checkpoint = str(out / "checkpoint")
    cfg = compose_app("train_prm", TINY_TRAIN + ["quality_gate.enabled=true", "quality_gate.problems=20", "quality_gate.min_f1=0"])
    passed = quality_gate(cfg, checkpoint)
    assert passed["passed"] and 0 <= passed["f1"] <= 1 and "20 held-out problems" in passed["metric"]
    cfg.quality_gate.min_f1 = 1.01
    with pytest.raises(PRMQualityError, match=rf"ProcessBench F1 on 20 held-out .* is {passed['f1']:.3f}, below the floor 1.01"):
        quality_gate(cfg, checkpoint)
    cfg.objective = "orm"  # the gate is the PRM's (step labels)
    assert quality_gate(cfg, checkpoint) is None


@pytest.mark.vllm
def test_vllm_and_transformers_agree_on_the_trained_checkpoint(trained_prm, vllm_policy):
    from prm.scoring import build_prm
    from itc.candidates import split_steps

    out, _ = trained_prm
    problems = [p.to_problem() for p in generate(6, seed=11)]
    outs = vllm_policy.generate([vllm_policy.format_prompt(p.problem) for p in problems], n=3)
    cands = [[split_steps(c.text, "\n\n") for c in cs] for cs in outs]
    scores = {}
    for backend in ("vllm", "hf"):
        scores[backend] = build_prm(prm_config(out, backend)).score([p.problem for p in problems], cands)
    flat = lambda s: [x for p in s for c in p for x in c]  # noqa: E731
    assert len(flat(scores["vllm"])) == len(flat(scores["hf"])) > 20
    diff = max(abs(a - b) for a, b in zip(flat(scores["vllm"]), flat(scores["hf"])))
    print(f"trained checkpoint: max |vLLM - HF| = {diff:.2e}")
    assert diff < 1e-3


@pytest.mark.vllm
def test_itc_eval_prm_reports_processbench_auc_and_best_of_n(trained_prm, tmp_path, monkeypatch):
    from itc.cli.eval_prm import run, summary_lines

    monkeypatch.setenv("ITC_RESULTS_LOG", str(tmp_path / "log"))

    out, _ = trained_prm
    pb = tmp_path / "pb.jsonl"
    recs = [toy_record(), toy_record(toy_record().steps[:1] + ["B+1 1+1=3"])]
    pb.write_text(
        "\n".join(json.dumps({"problem": r.problem, "steps": r.steps, "label": r.first_error()}) for r in recs * 2)
    )
    cfg = compose_app(
        "eval_prm",
        VLLM_TEST_OVERRIDES
        + [
            f"prm.model={out}/checkpoint", "prm.backend=hf",
            "toy.num_problems=8", "toy.calibration_problems=5", "toy.samples_per_problem=4",
            "toy.calibration_samples=2", "toy.ns=[1,4]",
            f"files=[{{path: {pb}, format: processbench}}]", f"output={tmp_path}/report.json",
        ],
    )
    report = run(cfg)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    toy = report["toy"]
    assert toy["test_problems"] == 8 and toy["test_solutions"] == 32
    for section in (toy, report["files"][str(pb)]):
        pbr = section["processbench"]
        assert 0.0 <= pbr["f1"] <= 1.0 and 0.0 < pbr["threshold"] < 1.0
    assert set(toy["best_of_n"]) == {"1", "4"}
    row = toy["best_of_n"]["4"]
    for key in ("best_of_n_min", "best_of_n_last", "best_of_n_product", "best_of_n_mean",
                "weighted_majority_min", "majority", "pass_at_n"):
        assert 0.0 <= row[key] <= row["pass_at_n"] <= 1.0
    # At N=1 every selector returns the one sample (when it has an answer).
    one = toy["best_of_n"]["1"]
    assert one["best_of_n_min"] == one["majority"] == one["pass_at_n"]
    assert summary_lines(report)
    # The headline figures also went to the results log, one entry.
    (entry,) = (tmp_path / "log").glob("*.md")
    assert f"| toy (held out) | {toy['processbench']['f1']:.3f} |" in entry.read_text()


@pytest.mark.vllm
@pytest.mark.parametrize("extra", [["objective=orm"], ["model.backbone=ttt", "model.num_heads=1"]])
def test_orm_objective_and_ttt_backbone_train_from_the_same_data(trained_prm, tmp_path, extra):
    from prm.training.pipeline import train_from_config

    out, first = trained_prm
    cfg = compose_app(
        "train_prm",
        TRAINED_PRM_OVERRIDES + extra + [f"output_dir={tmp_path}", f"data.cache={out}/data", "training.max_steps=3"],
    )
    report = train_from_config(cfg, release_engines=False)  # the sampled data comes from the cache
    assert report["examples"] == first["examples"]
    if "objective=orm" in extra:
        assert report["objective"] == "orm" and report["labelled_positions"] == report["examples"]
    else:
        arch = json.loads((tmp_path / "checkpoint" / "config.json").read_text())["architectures"]
        assert arch == ["TTTForProcessRewardModel"]


def test_train_prm_samples_its_toy_data_with_transformers_by_default(toy_policy_path):
    """The shipped itc-train-prm config samples through the real toy policy on transformers
    (the vLLM path is the trained_prm fixture's, with policy.backend=vllm)."""
    from itc.policy import build_policy
    from itc.policy.hf_backend import HFPolicy
    from prm.data.toy import sample_gold_records

    cfg = compose_app("train_prm", [])
    policy = build_policy(cfg.policy, seed=cfg.seed)
    assert isinstance(policy, HFPolicy)
    problems = [p.to_problem() for p in generate(4, seed=1)]
    records = sample_gold_records(policy, problems, 2)
    assert len(records) == 8
    assert all(r.steps and len(r.labels) == len(r.steps) for r in records)
    assert all(label in (0.0, 1.0) for r in records for label in r.labels)


def test_lm_verifier_scores_each_step_by_its_token_probabilities(hf_policy):
    """The reference verifier through the real toy policy (HF) and tokenizer."""
    from evals.lm_verifier import report, step_probabilities

    problems = [p.to_problem() for p in generate(3, 5, split="test")]
    right = [p.solution.split("\n\n") for p in problems]
    wrong = [s[:-1] + ["\\boxed{1000}"] for s in right]  # a final answer no problem has
    from prm.data.toy import gold_records

    records = gold_records(problems, [["\n\n".join(r), "\n\n".join(w)] for r, w in zip(right, wrong)])
    scored = [step_probabilities(hf_policy.model, hf_policy, rec) for rec in records]
    for rec, (prod, low, margin, conf) in zip(records, scored):
        assert len(prod) == len(low) == len(margin) == len(conf) == len(rec.steps)
        assert all(0.0 < p <= m <= 1.0 for p, m in zip(prod, low))
        assert all(x <= 0.0 for x in margin)  # no token beats the top logit
        assert all(c > 0.0 for c in conf)  # minus a mean of log-probabilities
    for (right_prod, _, right_margin, right_conf), (wrong_prod, _, wrong_margin, wrong_conf) in zip(
        scored[0::2], scored[1::2]
    ):
        assert right_conf[:-1] == pytest.approx(wrong_conf[:-1], rel=1e-4)  # same steps, same confidence
        assert right_prod[:-1] == pytest.approx(wrong_prod[:-1], rel=1e-4)  # same steps
        assert right_prod[-1] > wrong_prod[-1]  # copying the last value into \boxed{} is learned
        assert right_margin[-1] > wrong_margin[-1]
    figures = report(hf_policy.model, hf_policy, records[:2], records[2:])
    assert set(figures) == {"product", "min", "margin", "token_confidence"}
    assert figures["product"]["flawed"] == 2 and figures["product"]["correct"] == 2


def test_toy_base_names_pick_their_lm_build(monkeypatch):
    """model.base=toy-qwen2 and toy-qwen2-4k name two builds of the embedded world's Qwen2 LM;
    any other base is a path or hub id and is kept."""
    import itc.toy.build as build
    from prm.training import resolve_base

    specs = []
    monkeypatch.setattr(build, "policy_path", lambda spec, progress=True: specs.append(spec) or f"/lm-{spec.train_steps}")
    assert resolve_base("toy-qwen2") == "/lm-1300"
    assert resolve_base("toy-qwen2-4k") == "/lm-4000"
    assert [s.architecture for s in specs] == ["qwen2", "qwen2"]
    assert resolve_base("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"
    assert len(specs) == 2


def _tiny_tied_lm(path, tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    lm = Qwen2ForCausalLM(
        Qwen2Config(vocab_size=len(tok), hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                    tie_word_embeddings=True, max_position_embeddings=1024)
    ).eval()
    with torch.no_grad():
        # a trained LM's logits spread widely, so that some tokens fall short; and its
        # embeddings have a few weak directions, which the verifier's token code drops
        embed = lm.model.embed_tokens.weight
        top = torch.linalg.svd(embed, full_matrices=False).Vh[:120]
        embed.copy_(12 * embed @ top.T @ top)
    lm.save_pretrained(path)
    return lm


def test_lm_verifier_layers_compute_each_tokens_shortfall_and_the_worst_so_far(tmp_path):
    from prm.readout import FREE_CHANNELS, IN_SOLUTION, LOGIT, SHORTFALL, WORST
    from prm.scoring.formats import build_format
    from prm.training import make_model

    tok = build_tokenizer()
    lm = _tiny_tied_lm(tmp_path, tok)
    m = dict(compose_app("train_prm", []).model)
    assert m["lm_verifier"] is True and m["freeze_new_layers"] is True  # the defaults
    m.update(base=str(tmp_path))
    prm = make_model(m, tok, seed=0, step_tag="\n\n").eval()
    assert prm.config.hidden_size == 256 and prm.config.num_attention_heads == 4
    assert {n for n, p in prm.named_parameters() if p.requires_grad} == {
        "model.norm.weight", "score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"}
    fmt = build_format({"type": "qwen_prm", "step_tag": "\n\n", "system_prompt": None})
    enc = fmt.encode(tok, "Start at 7 and do A+5 B-3.", ["A+5 7+5=12", "B-3 12-3=9", "\\boxed{9}"])
    ids = torch.tensor([enc.input_ids])
    free = 128 + 128 - FREE_CHANNELS
    with torch.no_grad():
        logits = lm(ids).logits[0]
        states = prm.model(ids, output_hidden_states=True).hidden_states
        # the LM's layers compute what they computed, from the first half of the channels
        assert torch.allclose(lm.lm_head(lm.model.norm(states[2][0, :, :128])), logits, atol=1e-3)
        actual = logits[:-1].gather(1, ids[0, 1:, None])[:, 0]
        assert torch.allclose(states[3][0, 1:, free + LOGIT], actual, atol=0.05 * actual.abs().max())
        start = enc.input_ids.index(tok.convert_tokens_to_ids("<|assistant|>"))
        in_solution = states[4][0, :, free + IN_SOLUTION]
        assert in_solution[: start + 1].abs().max() < 0.1 and (in_solution[start + 1 :] - 1).abs().max() < 0.05
        # the shortfall: sum over other tokens of silu(2 (their logit - this one's - 2.5)) / 2,
        # inside the solution and off the step tags
        excess = logits[:-1] - actual[:, None] - 2.5
        expected = (torch.nn.functional.silu(2 * excess) / 2).sum(-1)
        tag = tok.convert_tokens_to_ids("ĊĊ")
        inside = [t for t in range(start + 1, len(enc.input_ids)) if enc.input_ids[t] != tag]
        got = states[4][0, inside, free + SHORTFALL]
        assert expected[[t - 1 for t in inside]].max() > 5  # some tokens do fall short
        assert torch.allclose(got, expected[[t - 1 for t in inside]], rtol=0.1, atol=0.1)
        # the worst shortfall so far (a soft maximum) at each step tag, and the head reads it
        worst = states[5][0, enc.positions, free + WORST]
        for pos, w in zip(enc.positions, worst):
            so_far = [t for t in inside if t <= pos]
            assert torch.allclose(w, states[4][0, so_far, free + SHORTFALL].max(), rtol=0.1, atol=0.1)
        good = torch.softmax(prm(input_ids=ids).logits[0, enc.positions], -1)[:, 1]
        assert torch.all(good[1:] <= good[:-1] + 1e-3)  # the worst so far never improves
    with pytest.raises(ValueError, match="extra_layers >= 3"):
        make_model({**m, "extra_layers": 2}, tok, seed=0, step_tag="\n\n")
    with pytest.raises(ValueError, match="solution_start_token"):
        make_model({**m, "solution_start_token": "not one token"}, tok, seed=0, step_tag="\n\n")
