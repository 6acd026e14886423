"""itc-verifiers (evals.verifiers): verifiers compared on the same samples, through the real
run loop, the session's vLLM policy and trained PRM, and the selection stage."""

import json
import os
import subprocess
import sys

import pytest
from conftest import VLLM_TEST_OVERRIDES, compose_run


@pytest.mark.vllm
def test_verifiers_on_the_same_samples(tmp_path, vllm_policy, vllm_prm, trained_prm, monkeypatch):
    from evals.verifiers import ORM_SCORES, run
    from itc.cli.curves import main as curves_main

    out, _ = trained_prm
    prm = ["prm=toy", f"prm.model={out}/checkpoint"]
    cfg = compose_run(VLLM_TEST_OVERRIDES + ["strategy=majority", "n=4", "dataset.limit=6", *prm])
    # the ORM's slot holds the same trained model read at its last step (aggregation=last):
    # its best-of-N must then equal the PRM's best-of-N under `last`, on every k
    orm_cfg = compose_run(["prm=toy-orm", f"prm.model={out}/checkpoint"]).prm
    folder = tmp_path / "sweep" / "verifiers"
    result = run(cfg, folder, orm_cfg, policy=vllm_policy, prm=vllm_prm, orm=vllm_prm)

    assert result["ns"] == [1, 2, 4] and result["problems"] == 6
    acc = result["accuracy"]
    assert set(acc) == {"majority", "ORM best-of-N (last)", "PRM best-of-N (last)", "PRM best-of-N (min)",
                        "PRM best-of-N (product)", "PRM best-of-N (mean)", "PRM-weighted majority (min)", "pass@N"}
    for name, by_k in acc.items():
        for k, cell in by_k.items():
            assert cell["ci"][0] <= cell["accuracy"] <= cell["ci"][1]
            assert cell["accuracy"] <= acc["pass@N"][k]["accuracy"]  # no selection beats pass@k
        assert acc["ORM best-of-N (last)"] == acc["PRM best-of-N (last)"]
    # at N=4 the comparison's choices are the run loop's own (recorded under every rule)
    metrics = json.loads((folder / "samples" / "metrics.json").read_text())
    assert metrics["accuracy_ci"] is not None  # metrics.json carries its interval
    by_rule = metrics["accuracy_by_selection"]
    assert acc["majority"]["4"]["accuracy"] == pytest.approx(by_rule["majority"])
    assert acc["PRM best-of-N (min)"]["4"]["accuracy"] == pytest.approx(by_rule["highest/min"])
    assert acc["PRM-weighted majority (min)"]["4"]["accuracy"] == pytest.approx(by_rule["weighted_majority/min"])
    d = result["prm_minus_orm"]
    assert d["diff"] == pytest.approx(acc["PRM best-of-N (min)"]["4"]["accuracy"] - acc["ORM best-of-N (last)"]["4"]["accuracy"])
    assert d["low"] <= d["diff"] <= d["high"]
    for name in ("verifiers.json", "verifiers.md", "verifiers.png", ORM_SCORES):
        assert (folder / name).stat().st_size > 0
    assert "minus ORM best-of-N (last)" in (folder / "verifiers.md").read_text()

    # a rerun reads the samples and the ORM's scores back: no engine is asked for anything
    again = run(cfg, folder, orm_cfg, policy=vllm_policy, prm=vllm_prm, orm=None)
    assert again["accuracy"] == result["accuracy"]
    # scores kept for other ORM weights or other samples are not used: scored again
    kept = json.loads((folder / ORM_SCORES).read_text())
    stale = {pid: [[0.0] * len(c) for c in cands] for pid, cands in kept["scores"].items()}
    (folder / ORM_SCORES).write_text(json.dumps({"key": "other-weights", "scores": stale}))
    assert run(cfg, folder, orm_cfg, policy=vllm_policy, prm=vllm_prm, orm=vllm_prm)["accuracy"] == result["accuracy"]
    assert json.loads((folder / ORM_SCORES).read_text()) == kept

    # itc-curves over a folder above it embeds the comparison in report.md
    curves_main([str(tmp_path / "sweep")])
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "Verifiers on the same samples" in report and "](verifiers/verifiers.png)" in report


def test_verifiers_bad_input_is_a_clear_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for args, message in (
        (["--n", "0"], "--n must be at least 1"),
        (["prm=no-such-prm"], "itc-verifiers: error:"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "itc.cli.verifiers", "--out", str(tmp_path / "v"), *args],
            check=False, capture_output=True, text=True, env=env, cwd=tmp_path,
        )
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr
    assert not (tmp_path / "v").exists()
