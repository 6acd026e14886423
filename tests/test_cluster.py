"""Sweeps and shards on Hydra's cluster launchers, run for real: a local Ray head (one per
test session, tests/conftest.py), submitit's local executor, and Hydra's basic launcher as the
reference. Each job is an ``itc-run`` process of its own (engines at
gpu_memory_utilization=0.04); at most two run at once. Also the clear errors for a Ray
cluster that does not answer and for a launcher whose extra is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from evals.curves import collect_metrics
from evals.shards import BATCH_DEPENDENT
from evals.sweep_status import DONE, PARTIAL, sweep_status
from itc.cli.launchers import free_port
from itc.results import METRICS_FILE, PLAN_FILE, RESULTS_FILE

ENGINE = ["policy.vllm.gpu_memory_utilization=0.04", "policy.vllm.enforce_eager=true"]
COMMON = ["dataset.limit=8", "n=2", *ENGINE]
SWEEP = ["strategy=greedy,majority", "shard=0/2,1/2"]
RAY = ["hydra/launcher=ray", "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.remote.num_cpus=1"]
# what a record says about the search (not how long it took, or what the prefix cache saved)
SAME = ("problem_id", "chosen_answer", "correct", "correct_by_selection", "candidates", "completion_tokens", "prompt_tokens")


def itc_run(args: list[str], cwd: Path, env: dict[str, str] | None = None, wait: bool = True):
    """The real itc-run, from this checkout (PYTHONPATH is kept)."""
    cmd = [sys.executable, "-m", "itc.cli.run", *args]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=900, check=False)


def merged(sweep: Path) -> dict[tuple[str, bool], dict]:
    """The sweep's runs by (strategy, sharded), shards merged."""
    return {(m["strategy"], "shards" in m): m for m in collect_metrics([sweep])}


def assert_same_results(a: dict, b: dict) -> None:
    """Two runs' records agree problem by problem, in order, and so do their metrics."""
    assert [{k: r.get(k) for k in SAME} for r in a["_records"]] == [{k: r.get(k) for k in SAME} for r in b["_records"]]
    skip = {*BATCH_DEPENDENT, "run_dir", "shards"}
    assert {k: v for k, v in a.items() if k not in skip and not k.startswith("_")} == {
        k: v for k, v in b.items() if k not in skip and not k.startswith("_")
    }


def records_of(m: dict) -> None:
    if "_records" not in m:
        from itc.results import read_results

        m["_records"] = read_results(m["run_dir"])


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> dict:
    """The sweep under Hydra's basic launcher, with the unsharded runs beside the shards
    (one process, one engine)."""
    cwd = tmp_path_factory.mktemp("basic")
    proc = itc_run(["-m", "name=basic", "strategy=greedy,majority", "shard=null,0/2,1/2", *COMMON], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = merged(cwd / "multirun" / "basic")
    for m in runs.values():
        records_of(m)
    return runs


@pytest.mark.slow
def test_shards_merge_to_the_unsharded_run(basic_sweep):
    assert sorted(basic_sweep) == [("greedy", False), ("greedy", True), ("majority", False), ("majority", True)]
    for strategy in ("greedy", "majority"):
        whole, parts = basic_sweep[(strategy, False)], basic_sweep[(strategy, True)]
        assert len(parts["shards"]) == 2 and whole["num_problems"] == 8
        assert_same_results(parts, whole)


@pytest.mark.slow
def test_ray_sweep_gives_the_basic_launchers_results(ray_head, basic_sweep, tmp_path):
    """Two strategies x two shards as four Ray tasks (two at a time) on the session's head."""
    proc = itc_run(
        ["-m", "name=ray", *RAY, f"hydra.launcher.ray.init.address={ray_head}", "hydra.sweeper.max_batch_size=2", *SWEEP, *COMMON],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "multirun" / "ray"
    assert [j.state for j in sweep_status(sweep).jobs] == [DONE] * 4
    runs = merged(sweep)
    assert sorted(runs) == [("greedy", True), ("majority", True)]
    for strategy in ("greedy", "majority"):
        assert_same_results(runs[(strategy, True)], basic_sweep[(strategy, True)])
        assert_same_results(runs[(strategy, True)], basic_sweep[(strategy, False)])


@pytest.mark.slow
def test_submitit_local_sweep_gives_the_basic_launchers_results(basic_sweep, tmp_path):
    """The shards as submitit's local jobs (processes of their own, both at once)."""
    proc = itc_run(["-m", "name=sub", "hydra/launcher=submitit_local", "strategy=majority", "shard=0/2,1/2", *COMMON], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = merged(tmp_path / "multirun" / "sub")
    assert list(runs) == [("majority", True)]
    assert_same_results(runs[("majority", True)], basic_sweep[("majority", True)])


@pytest.mark.slow
def test_a_preempted_ray_job_resumes_without_duplicates(ray_head, tmp_path):
    """A job's worker (and its engine) killed after its first results: the sweep ends with a
    clear error, the run is partial, and the same command finishes only what is missing."""
    args = [
        "-m", "name=pre", *RAY, f"hydra.launcher.ray.init.address={ray_head}",
        "hydra.launcher.ray.remote.max_retries=0",  # Ray would otherwise retry (and resume) it itself
        "strategy=majority", "n=32", "shard=1/2", "batch_size=1", "dataset.limit=8", *ENGINE,
    ]
    proc = itc_run(args, tmp_path, wait=False)
    sweep = tmp_path / "multirun" / "pre"
    results = None
    while proc.poll() is None:  # wait for the job's first result
        found = list(sweep.rglob(RESULTS_FILE))
        if found and found[0].read_text().count("\n") >= 1:
            results = found[0]
            break
        time.sleep(0.1)
    assert results is not None, "the job ended before it could be preempted: " + proc.communicate()[1][-2000:]
    workers = [  # the job's Ray worker: it works in this test's folder
        p for p in psutil.process_iter(["cmdline", "cwd"])
        if (p.info["cmdline"] or [""])[0].startswith("ray::_run_job") and p.info["cwd"] == str(tmp_path)
    ]
    assert len(workers) == 1
    for p in [*workers[0].children(recursive=True), workers[0]]:  # the node goes down: all of it
        p.kill()
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-3000:]
    assert "itc-run: error: a job on Ray failed" in err and "Traceback" not in err
    run_dir = results.parent
    assert not (run_dir / METRICS_FILE).exists()
    total = json.loads((run_dir / PLAN_FILE).read_text())["problems"]
    (job,) = sweep_status(sweep).jobs
    assert job.state == PARTIAL and 1 <= job.written < total == job.total
    before = results.read_text()

    proc = itc_run(args, tmp_path)  # the same command again
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = results.read_text()
    assert after.startswith(before)  # what was written is kept, not redone
    ids = [json.loads(line)["problem_id"] for line in after.splitlines()]
    assert len(ids) == len(set(ids)) == total
    assert json.loads((run_dir / METRICS_FILE).read_text())["num_problems"] == total
    assert [j.state for j in sweep_status(sweep).jobs] == [DONE]


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("itc-run: error: ")]
    return line


def test_an_unreachable_ray_cluster_is_a_clear_error(tmp_path):
    port = free_port()  # nothing listens there
    proc = itc_run(["-m", *RAY, f"hydra.launcher.ray.init.address=127.0.0.1:{port}", "strategy=greedy"], tmp_path)
    line = _error_line(proc)
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in line
    assert "hydra.launcher.ray.init.address=" in line


@pytest.mark.parametrize("launcher, extra, module", [("ray", "ray", "ray"), ("slurm", "slurm", "submitit"), ("submitit_local", "slurm", "submitit")])
def test_a_launcher_without_its_extra_is_a_clear_error(tmp_path, launcher, extra, module):
    hidden = tmp_path / "hidden" / module  # the package as if not installed
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\")\n")
    path = os.pathsep.join(p for p in (str(tmp_path / "hidden"), os.environ.get("PYTHONPATH")) if p)
    proc = itc_run(["-m", f"hydra/launcher={launcher}", "strategy=greedy"], tmp_path, env={"PYTHONPATH": path})
    line = _error_line(proc)
    assert f"hydra/launcher={launcher} needs the optional extra [{extra}]" in line
    assert f'pip install -e ".[{extra}]"' in line
    assert not (tmp_path / "multirun").exists()  # nothing started


def test_a_job_that_fails_on_ray_is_reported_like_a_local_one(ray_head, tmp_path):
    """A job's own error (here a dataset file that does not exist, before any engine starts)
    comes back from its Ray worker as the sweep's ``itc-run: error: ...``."""
    proc = itc_run(
        ["-m", *RAY, f"hydra.launcher.ray.init.address={ray_head}", "strategy=greedy", "dataset=math500", "dataset.path=missing.jsonl"],
        tmp_path,
    )
    line = _error_line(proc)
    assert "missing.jsonl" in line


def test_the_launcher_configs_compose_for_one_gpu_per_job():
    from hydra import compose, initialize_config_module

    import itc.cli.run  # noqa: F401 - its filter of the Ray config's schema-matching warning

    with initialize_config_module(config_module="configs", version_base="1.3"):
        ray = compose(config_name="run", overrides=["hydra/launcher=ray", "hydra.launcher.ray.remote.num_cpus=2"], return_hydra_config=True)
        slurm = compose(config_name="run", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = ray.hydra.launcher
    assert launcher._target_ == "hydra_plugins.itc_launchers.ray_launcher.RayLauncher"
    assert (launcher.ray.remote.num_gpus, launcher.ray.remote.num_cpus, launcher.ray.remote.max_calls) == (1, 2, 1)
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.partition, launcher.tasks_per_node) == (1, "gpu", 1)
