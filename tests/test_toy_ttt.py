"""policy=toy-ttt: the long-chain TTT policy is built through the shared cache with a quality
gate, and itc-run's search strategies use it with beams forking their TTT state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from itc.policy import resolve_model_path
from itc.toy import long_chain

REPO = Path(__file__).resolve().parents[1]
TINY = replace(
    long_chain.TOY_TTT, hidden_size=32, num_layers=1, gpt2_intermediate_size=64, train_steps=3,
    batch_size=2, warmup_steps=1, train_lengths=(2, 4),
)


def test_curriculum_admits_longer_chains_stage_by_stage():
    spec = replace(long_chain.TOY_TTT, train_steps=80, train_lengths=(8, 16, 32, 64), curriculum_fraction=0.5)
    lengths = [long_chain.length_at(spec, s) for s in range(80)]
    assert set(lengths[:10]) == {8} and max(lengths[10:20]) == 16 and max(lengths[20:30]) == 32
    assert lengths[40:44] == [8, 16, 32, 64]  # past the ramp: every length in turn
    flat = replace(spec, curriculum_fraction=0.0)
    assert [long_chain.length_at(flat, s) for s in range(4)] == [8, 16, 32, 64]


def test_toy_ttt_is_built_once_gated_and_cached(tmp_path, monkeypatch, one_torch_thread):
    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(long_chain, "TOY_TTT", TINY)
    monkeypatch.setattr(long_chain, "GATE_TOKENS_FLOOR", 1.01)  # no 3-step model reaches it
    with pytest.raises(long_chain.BuildQualityError, match="quality gate"):
        resolve_model_path("toy-ttt")
    assert not long_chain.policy_entry("ttt", TINY).exists()
    monkeypatch.setattr(long_chain, "GATE_TOKENS_FLOOR", 0.0)
    path = Path(resolve_model_path("toy-ttt"))
    assert path == long_chain.policy_entry("ttt", TINY) and path.parent == tmp_path / "cache" / "toy"
    info = json.loads((path / "build_info.json").read_text())
    assert info["quality_gate"]["passed"] and set(info["quality_gate"]["by_length"]) == {"2", "4"}
    assert 0 <= info["quality_gate"]["tokens"] <= 1
    mtime = (path / "build_info.json").stat().st_mtime_ns
    assert Path(resolve_model_path("toy-ttt")) == path  # cached: not built again
    assert (path / "build_info.json").stat().st_mtime_ns == mtime


def test_itc_run_beam_search_with_the_ttt_policy(tmp_path, one_torch_thread):
    model = tmp_path / "ttt"
    model.mkdir()
    long_chain.train("ttt", TINY, model)
    out = tmp_path / "run"
    args = [
        "policy=toy-ttt", f"policy.model={model}", "strategy=beam_search", "prm=toy", "prm.backend=hf",
        "n=4", "dataset.limit=1", "strategy.max_steps=2", "policy.sampling.max_tokens=30",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "itc.cli.run", *args], cwd=tmp_path, capture_output=True, text=True,
        env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["num_problems"] == 1
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # beams continue from their prefix's state: far fewer prompt tokens are computed than sent
    for r in rows:
        assert 0 < r["prompt_tokens_computed"] < r["prompt_tokens"] / 2, r


def test_lookup_positions_are_each_steps_operation():
    from itc.toy import task
    from itc.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    p = task.generate(1, seed=0, levels=(1,), long_chain_steps=8)[0]
    batch = long_chain.encode(tok, [p])
    where = long_chain.lookup_positions(tok, batch["input_ids"])[0]
    solution = batch["labels"][0] != -100
    # one per operation in the problem text and one per step of the solution
    assert int((where & solution).sum()) == 8 and int((where & ~solution).sum()) == 8
    picked = tok.convert_ids_to_tokens(batch["input_ids"][0][where & solution].tolist())
    assert picked == [f"{op}{x}" for op, x in p.ops]
