"""A PRM on the TTT backbone (``itc-train-prm model.base=null model.backbone=ttt``): saved,
loaded through the Auto classes, scored by the transformers backend with padding that does
not change a candidate's scores, and trainable."""

from __future__ import annotations

import pytest
import torch

from itc.toy import generate
from itc.toy.tokenizer import build_tokenizer
from prm.scoring import QwenPRMFormat
from prm.scoring.hf_backend import HFPRM
from prm.training import init_model, soft_cross_entropy


@pytest.fixture(scope="module")
def ttt_prm_path(tmp_path_factory):
    tok = build_tokenizer()
    model = init_model(
        "ttt", tok, hidden_size=64, num_layers=2, num_heads=1, intermediate_size=128, seed=0
    )
    path = tmp_path_factory.mktemp("ttt_prm")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_ttt_prm_scores_batched_as_one_at_a_time(ttt_prm_path, one_torch_thread):
    prm = HFPRM("ttt", str(ttt_prm_path), QwenPRMFormat(system_prompt=None), max_model_len=2048, batch_size=4)
    assert type(prm.model).__name__ == "TTTForProcessRewardModel"
    problems = generate(3, seed=5, levels=(1, 3, 5))
    cands = [[p.reference_steps(), p.reference_steps()[:2]] for p in problems]
    texts = [p.text for p in problems]
    batched = prm.score(texts, cands)
    for i, p in enumerate(problems):
        for j, steps in enumerate(cands[i]):
            alone = prm.score([p.text], [[steps]])[0][0]
            assert len(alone) == len(steps)
            assert batched[i][j] == pytest.approx(alone, abs=1e-5)
    # Causal: a prefix's scores are the full solution's first scores.
    assert batched[0][1] == pytest.approx(batched[0][0][:2], abs=1e-5)


def test_ttt_prm_trains(ttt_prm_path, one_torch_thread):
    from transformers import AutoModelForTokenClassification

    model = AutoModelForTokenClassification.from_pretrained(ttt_prm_path)
    ids = torch.randint(0, 200, (2, 40))
    labels = torch.full((2, 40), -100.0)
    labels[:, 10], labels[:, 30] = 1.0, 0.0
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = soft_cross_entropy(model(input_ids=ids).logits, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.5
