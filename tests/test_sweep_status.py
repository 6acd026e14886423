"""evals.sweep_status: the jobs a sweep should have made, against the folders it left."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from evals.sweep_status import expand_sweep, sweep_status
from itc.results import summarize


def _job(root, sub, overrides, done=True):
    d = root / sub
    (d / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), d / ".hydra" / "overrides.yaml")
    if done:
        record = {"level": 1, "correct": True, "candidates": [{"correct": True}], "completion_tokens": 9}
        metrics = summarize([record], strategy=overrides[0].split("=")[1], n=int(overrides[1].split("=")[1]))
        (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def test_expand_sweep_is_hydras_product():
    jobs = expand_sweep(["strategy=greedy,majority", "n=1,4", "prm=toy"])
    assert len(jobs) == 4
    assert ["strategy=majority", "n=4", "prm=toy"] in jobs


def test_missing_and_incomplete_runs_are_named(tmp_path, capsys):
    OmegaConf.save(
        OmegaConf.create({"hydra": {"overrides": {"task": ["strategy=greedy,majority", "n=1,4"]}}}),
        tmp_path / "multirun.yaml",
    )
    _job(tmp_path, "a", ["strategy=greedy", "n=1"])
    half = _job(tmp_path, "b", ["strategy=greedy", "n=4"], done=False)
    _job(tmp_path, "c", ["strategy=majority", "n=1"])
    status = sweep_status(tmp_path)
    assert status.expected == 4 and not status.ok
    assert status.incomplete == [half]
    assert status.missing == [["strategy=majority", "n=4"]]
    assert sweep_status(tmp_path / "a") is None  # a run folder, not a sweep

    # itc-curves still draws what is there and reports the rest
    from itc.cli.curves import main

    main([str(tmp_path)])
    err = capsys.readouterr().err
    assert f"incomplete run (no metrics.json): {half}" in err
    assert "missing run: strategy=majority n=4" in err


def test_jobs_that_shared_a_folder_are_found(tmp_path):
    """greedy ignores n: its jobs at n=1 and n=4 write one folder, which lists both."""
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": ["strategy=greedy", "n=1,4"]}}}), tmp_path / "multirun.yaml")
    d = _job(tmp_path, "greedy-n1", ["strategy=greedy", "n=1"])
    OmegaConf.save(OmegaConf.create([["strategy=greedy", "n=1"], ["strategy=greedy", "n=4"]]), d / ".hydra" / "jobs.yaml")
    status = sweep_status(tmp_path)
    assert status.ok and status.complete == [d, d]
