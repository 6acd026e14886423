"""`TTTForProcessRewardModel` on its own: the saved checkpoint resolves through
``prm.scoring.modeling``, the transformers PRM backend's batched scores equal a direct
unbatched forward, padding on either side leaves real tokens' logits alone, and the built-in
token-classification loss ignores -100 and padding, and trains."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from itc.toy import generate
from itc.toy.tokenizer import build_tokenizer
from itc.ttt import TTTConfig, TTTForProcessRewardModel
from prm.scoring import QwenPRMFormat
from prm.scoring.hf_backend import HFPRM
from prm.scoring.modeling import classifier_class, load_model


def _tiny_prm(tok, **overrides) -> TTTForProcessRewardModel:
    torch.manual_seed(0)
    sizes = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        ttt_layer_type="linear",
        mini_batch_size=4,  # short inputs still span several inner mini-batches
    )
    config = TTTConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        num_labels=2,
        **{**sizes, **overrides},
    )
    model = TTTForProcessRewardModel(config)
    # The head starts near zero; random weights make score differences visible.
    with torch.no_grad():
        for p in model.score.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory):
    tok = build_tokenizer()
    path = tmp_path_factory.mktemp("ttt_prm_direct")
    _tiny_prm(tok).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_checkpoint_resolves_to_the_ttt_prm(prm_path):
    saved = json.loads((prm_path / "config.json").read_text())
    assert saved["architectures"] == ["TTTForProcessRewardModel"]
    assert saved["model_type"] == "itc_ttt"
    config = AutoConfig.from_pretrained(prm_path)
    model = classifier_class(config).from_pretrained(prm_path)
    assert isinstance(model, TTTForProcessRewardModel)
    loaded = load_model(str(prm_path), "classifier", dtype="float32")
    assert isinstance(loaded, TTTForProcessRewardModel)
    keys = set(loaded.state_dict())
    assert {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"} <= keys
    assert "model.embed_tokens.weight" in keys


@pytest.mark.parametrize("ttt_layer_type", ["linear", "mlp"])
def test_padding_leaves_logits_alone(ttt_layer_type, one_torch_thread):
    tok = build_tokenizer()
    model = _tiny_prm(tok, ttt_layer_type=ttt_layer_type).double()
    seqs = [torch.randint(10, 200, (n,)) for n in (23, 9, 16)]
    alone = [model(input_ids=s[None]).logits[0] for s in seqs]
    width = max(len(s) for s in seqs)
    for side in ("left", "right"):
        ids = torch.full((len(seqs), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for b, s in enumerate(seqs):
            cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
            ids[b, cols], mask[b, cols] = s, 1
        logits = model(input_ids=ids, attention_mask=mask).logits
        for b, s in enumerate(seqs):
            real = logits[b][mask[b].bool()]
            torch.testing.assert_close(real, alone[b], atol=1e-10, rtol=0)


def test_batched_scores_equal_a_direct_forward(prm_path, one_torch_thread):
    prm = HFPRM(
        "ttt", str(prm_path), QwenPRMFormat(system_prompt=None), dtype="float32",
        max_model_len=1024, batch_size=8,
    )
    assert isinstance(prm.model, TTTForProcessRewardModel)
    problems = generate(4, seed=3, levels=(1, 2, 4, 5))
    cands = [
        [p.reference_steps(), p.reference_steps()[:1], ["A+1 0+1=1", "\\boxed{1}"]]
        for p in problems
    ]
    batched = prm.score([p.text for p in problems], cands)
    scores = [s for row in batched for c in row for s in c]
    assert max(scores) - min(scores) > 1e-3  # the check below is not vacuous
    for p, row, steps_list in zip(problems, batched, cands):
        for scores, steps in zip(row, steps_list):
            enc = prm.encode(p.text, steps)
            with torch.no_grad():
                logits = prm.model(input_ids=torch.tensor([enc.input_ids])).logits[0]
            direct = torch.softmax(logits[enc.positions].float(), dim=-1)[:, 1].tolist()
            assert len(scores) == len(steps)
            assert scores == pytest.approx(direct, abs=1e-5)


def test_loss_ignores_masked_labels_and_trains(one_torch_thread):
    tok = build_tokenizer()
    model = _tiny_prm(tok).train()
    ids = torch.randint(10, 200, (2, 30))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    ids[1, 20:] = tok.pad_token_id
    labels = torch.full_like(ids, -100)
    labels[0, [5, 17, 29]] = torch.tensor([1, 0, 1])
    labels[1, [7, 19, 25]] = torch.tensor([0, 1, 1])  # 25 is padding: ignored

    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    picked = (labels != -100) & mask.bool()
    manual = torch.nn.functional.cross_entropy(out.logits[picked], labels[picked])
    torch.testing.assert_close(out.loss, manual)

    out.loss.backward()
    assert model.score[2].weight.grad.abs().sum() > 0
    assert model.model.layers[0].ttt.W1.grad.abs().sum() > 0  # through the inner loop too
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = out.loss.item()
    opt.step()
    for _ in range(20):
        opt.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
    assert loss.item() < first * 0.5


def test_itc_eval_prm_scores_the_ttt_prm_on_long_chains_by_length(prm_path, tmp_path, monkeypatch):
    """itc-eval-prm's long-chain section: first-error F1 (and step ROC-AUC) per chain length,
    here for a TTT PRM on the transformers backend."""
    from conftest import compose_app

    from itc.cli.eval_prm import results_entry, run

    monkeypatch.setenv("ITC_RESULTS_LOG", str(tmp_path / "log"))
    cfg = compose_app("eval_prm", [
        f"prm.model={prm_path}", "prm.backend=hf", "toy.enabled=false", "long_chains.enabled=true",
        "long_chains.lengths=[8,16]", "long_chains.num_problems=3", f"output={tmp_path}/report.json",
    ])
    report = run(cfg)
    assert "toy" not in report and list(report["long_chains"]) == ["8", "16"]
    for section in report["long_chains"].values():
        # per length: 3 reference and 3 one-step-corrupted solutions calibrate, 6 are scored
        assert section["test_solutions"] == 6 and section["calibration_solutions"] == 6
        assert 0.0 <= section["processbench"]["f1"] <= 1.0
    assert "long chains, 16 operations" in results_entry(report, "r.json")
    assert len(list((tmp_path / "log").glob("*.md"))) == 1
