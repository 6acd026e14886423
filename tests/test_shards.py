"""Shards (itc-run shard=I/K): the split, the folder name, the merge in itc-curves, and the
status of a sweep's jobs (itc-sweep-status). The real launchers: tests/test_cluster.py."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from evals.curves import collect_metrics, series
from evals.sweep_status import DONE, NOT_STARTED, PARTIAL, sweep_status
from itc.errors import InputError
from itc.results import PLAN_FILE, summarize
from itc.shard import Shard, parse_shard, select_shard, shard_of

IDS = [f"p{i}" for i in range(40)]


def test_parse_shard():
    assert parse_shard("1/4") == Shard(1, 4) and parse_shard(None) is None
    assert parse_shard(" 0 / 1 ").suffix == "-shard0of1"
    for bad in ("4/4", "-1/4", "1", "a/b", "1/0"):
        with pytest.raises(InputError, match="expected I/K"):
            parse_shard(bad)


def test_shards_cover_the_problems_once_whatever_their_order():
    shards = [select_shard(IDS, Shard(i, 3), key=str) for i in range(3)]
    assert sorted(p for s in shards for p in s) == sorted(IDS)  # every problem in exactly one shard
    assert all(shards)  # 40 ids over 3 shards: none empty
    shuffled = random.Random(0).sample(IDS, len(IDS))
    for i, shard in enumerate(shards):  # membership follows the id alone, order is kept
        assert select_shard(shuffled, Shard(i, 3), key=str) == [p for p in shuffled if p in shard]
    assert [shard_of(p, 3) for p in IDS[:5]] == [shard_of(p, 3) for p in IDS[:5]]
    assert select_shard(IDS, None, key=str) == IDS


def _run_dir(overrides):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides, return_hydra_config=True)
    import itc.run_dir  # noqa: F401 - the folder's resolvers

    return OmegaConf.select(cfg, "hydra.run.dir")


def test_a_shard_has_its_own_folder_and_an_invalid_shard_is_refused():
    plain = _run_dir(["strategy=greedy"])
    assert _run_dir(["strategy=greedy", "shard=2/4"]) == plain + "-shard2of4"
    from itc.config_schema import validate_run_config
    from tests.conftest import compose_run

    with pytest.raises(InputError, match=r"shard=4/4: expected I/K"):
        validate_run_config(compose_run(["shard=4/4"]))


def _record(pid, correct, level=1):
    return {
        "problem_id": pid, "level": level, "correct": correct, "selection": "majority",
        "correct_by_selection": {"majority": correct}, "completion_tokens": 10, "prompt_tokens": 5,
        "wall_seconds": 0.1, "candidates": [{"text": pid, "answer": "1", "correct": correct}],
    }


def _write_run(folder, records, shard=None, total=None, config=None, metrics=True, overrides=None):
    """A run folder as itc-run leaves it (results, identity, plan; metrics when finished)."""
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ident = {"strategy": {"name": "majority", "n": 2}, "policy": {"name": "toy"}, "dataset": {"name": "toy"}, "seed": 0, **(config or {})}
    plan = {"problems": total if shard is None else len(records), "overrides": overrides}
    if shard is not None:
        ident["shard"] = shard
        plan.update(shard=shard, dataset_problems=total, order={r["problem_id"]: int(r["problem_id"][1:]) for r in records})
    (folder / "run_config.json").write_text(json.dumps(ident))
    (folder / PLAN_FILE).write_text(json.dumps(plan))
    if metrics:
        m = summarize(records, strategy="majority", n=2, policy="toy", dataset="toy", prm=None, seed=0)
        if shard is not None:
            m.update(shard=shard, dataset_problems=total)
        (folder / "metrics.json").write_text(json.dumps(m))


def _sharded(tmp_path, k=3, n=12, **kw):
    records = [_record(f"p{i}", i % 3 != 0, level=1 + i % 2) for i in range(n)]
    for i in range(k):
        part = [r for r in records if shard_of(r["problem_id"], k) == i]
        _write_run(tmp_path / "sweep" / f"majority-n2-seed0-shard{i}of{k}", part, f"{i}/{k}", n, **kw)
    return records


def test_itc_curves_merges_a_runs_shards_into_the_unsharded_run(tmp_path):
    records = _sharded(tmp_path)
    _write_run(tmp_path / "whole" / "majority-n2-seed0", records, total=len(records))
    (merged,) = collect_metrics([tmp_path / "sweep"])
    (whole,) = collect_metrics([tmp_path / "whole"])
    assert len(merged["shards"]) == 3 and merged["run_dir"].endswith("shard0of3")
    assert [r["problem_id"] for r in merged["_records"]] == [r["problem_id"] for r in records]
    for key in ("accuracy", "accuracy_ci", "accuracy_by_level", "accuracy_by_level_ci", "num_problems", "completion_tokens"):
        assert merged[key] == whole[key], key
    (line,) = series([merged]).values()  # one line, not labelled by the shard
    assert line[0]["num_problems"] == 12


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", r"shard\(s\) 1/3 missing or unfinished"),
        ("unfinished", r"shard\(s\) 1/3 missing or unfinished"),
        ("config", r"different configurations \(differ in: strategy.beam_width\)"),
        ("twice", r"problem 'p\d+' appears in shards"),
        ("short", r"its 3 shards hold 11 problems, the dataset has 12"),
    ],
)
def test_shards_that_cannot_be_merged_are_refused(tmp_path, damage, message, capsys):
    _sharded(tmp_path)
    one = tmp_path / "sweep" / "majority-n2-seed0-shard1of3"
    if damage == "missing":
        for f in one.iterdir():
            f.unlink()
        one.rmdir()
    elif damage == "unfinished":
        (one / "metrics.json").unlink()
    elif damage == "config":
        ident = json.loads((one / "run_config.json").read_text())
        ident["strategy"]["beam_width"] = 2
        (one / "run_config.json").write_text(json.dumps(ident))
    else:
        lines = (one / "results.jsonl").read_text().splitlines(keepends=True)
        if damage == "twice":
            other = tmp_path / "sweep" / "majority-n2-seed0-shard0of3" / "results.jsonl"
            lines.append(other.read_text().splitlines(keepends=True)[0])
        else:
            lines = lines[1:]
        (one / "results.jsonl").write_text("".join(lines))
    with pytest.raises(InputError, match=message):
        collect_metrics([tmp_path / "sweep"])
    from itc.cli.curves import main

    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "sweep")])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("itc-curves: error: ")


def test_sweep_status_tells_done_partial_and_not_started(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    task = ["strategy=majority", "shard=0/3,1/3,2/3"]
    OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": task}}}), sweep / "multirun.yaml")
    records = [_record(f"p{i}", True) for i in range(12)]
    parts = [[r for r in records if shard_of(r["problem_id"], 3) == i] for i in range(3)]
    _write_run(sweep / "a-shard0of3", parts[0], "0/3", 12, overrides=["strategy=majority", "shard=0/3"])
    # preempted after two problems: its plan says how many it set out to do
    half = sweep / "a-shard1of3"
    _write_run(half, parts[1][:2], "1/3", 12, metrics=False, overrides=["strategy=majority", "shard=1/3"])
    plan = json.loads((half / PLAN_FILE).read_text())
    (half / PLAN_FILE).write_text(json.dumps({**plan, "problems": len(parts[1])}))
    status = sweep_status(sweep)
    assert [(j.state, j.written, j.total) for j in status.jobs] == [
        (DONE, len(parts[0]), len(parts[0])), (PARTIAL, 2, len(parts[1])), (NOT_STARTED, None, None),
    ]
    assert status.incomplete == [half] and status.missing == [["strategy=majority", "shard=2/3"]]
    assert f"incomplete run (no metrics.json): {half} (2/{len(parts[1])} problems written)" in status.describe()[0]

    proc = subprocess.run([sys.executable, "-m", "itc.cli.sweep_status", str(sweep)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"{sweep}: 3 jobs"
    assert lines[3].split()[:2] == ["partial", f"2/{len(parts[1])}"] and lines[3].endswith(str(half))
    assert lines[4].startswith("not started") and "shard=2/3" in lines[4]
    assert "1 done, 1 partial, 1 not started" in proc.stdout

    proc = subprocess.run([sys.executable, "-m", "itc.cli.sweep_status", str(half)], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"itc-sweep-status: error: {half}: not a sweep folder (no multirun.yaml; itc-run -m writes one)"
