"""Engine processes: shut down at exit (exit status 0, no abort), never outliving their parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _alive(pids: list[int], started: dict[int, float]) -> list[int]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started[pid]) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _kill_parent_and_check(script: str, timeout_ready: float) -> None:
    """Run ``script`` (it prints one JSON line of child pids when ready), ``kill -9`` it
    alone, and check that none of the children it named is alive 10 s later."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env=_env(), start_new_session=True,
    )
    try:
        for line in proc.stdout:  # vLLM logs to stdout too
            if line.startswith('{"children"'):
                break
        else:
            raise AssertionError(f"the parent exited before it was ready (status {proc.wait(timeout_ready)})")
        pids = json.loads(line)["children"]
        assert pids, "the parent started no child process"
        started = {pid: psutil.Process(pid).create_time() for pid in pids}
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone, not its process group
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(pids, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _alive(pids, started)
        assert not left, f"processes {left} outlived their parent by 10 s"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_reaper_ends_registered_processes_when_the_parent_is_killed():
    script = textwrap.dedent(
        """
        import json, subprocess, sys, time
        from itc.policy.reaper import reap_on_exit
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        reap_on_exit([child.pid])
        print(json.dumps({"children": [child.pid]}), flush=True)
        time.sleep(600)
        """
    )
    _kill_parent_and_check(script, timeout_ready=30)


def test_reaper_leaves_a_reused_process_id_alone(tmp_path):
    """A registered process that ended before the parent is not confused with a newer one."""
    from itc.policy import reaper

    line = reaper._identity(psutil.Process())
    pid, started = line.split()
    assert int(pid) == os.getpid() and abs(float(started) - psutil.Process().create_time()) < 1e-3


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_engine_processes_end_when_their_parent_is_killed(toy_policy_path):
    """``kill -9`` of a process running a real vLLM engine (as a scheduler's timeout or the
    OOM killer does) leaves no engine-core or worker process behind."""
    script = textwrap.dedent(
        """
        import json, time
        from itc.policy.reaper import child_processes
        from itc.policy.vllm_backend import get_engine
        from itc.toy.build import policy_path

        if __name__ == "__main__":
            get_engine(model=str(policy_path(progress=False)), dtype="float32", max_model_len=256,
                       gpu_memory_utilization=0.05, enforce_eager=True, block_size=32)
            print(json.dumps({"children": sorted(child_processes())}), flush=True)
            time.sleep(600)
        """
    )
    _kill_parent_and_check(script, timeout_ready=600)


def _command_script(body: str) -> str:
    return textwrap.dedent(
        """
        import sys, threading, time
        import torch
        import vllm  # noqa: F401 - a process that loaded vLLM leaves through os._exit
        from itc.cli.lifecycle import command_process
        from itc.errors import InputError

        def spin():  # a daemon thread inside C++ code at exit, as vLLM's and torch's can be:
            a = torch.randn(64, 64)  # the interpreter's finalization would abort (status 134)
            while True:
                torch.mm(a, a)

        threading.Thread(target=spin, daemon=True).start()
        time.sleep(0.2)
        with command_process():
        """
    ) + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.mark.parametrize(
    "body, status, stderr",
    [
        ("print('done')", 0, ""),
        ("raise InputError('bad value')", 2, "error: bad value"),  # via cli_errors in real use
        ("sys.exit(2)", 2, ""),
        ("raise RuntimeError('a bug')", 1, "RuntimeError: a bug"),
    ],
)
def test_command_process_exits_with_the_status_the_work_earned(body, status, stderr):
    if "InputError" in body:  # what every CLI does: cli_errors inside command_process
        body = "from itc.cli.errors import cli_errors\nwith cli_errors('prog'):\n    " + body
    proc = subprocess.run(
        [sys.executable, "-c", _command_script(body)], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert proc.returncode == status, proc.stderr[-2000:]
    assert stderr in proc.stderr
    assert "terminate called" not in proc.stderr


@pytest.mark.vllm
@pytest.mark.slow
def test_prm_sweep_through_the_cli_exits_zero_every_time(trained_prm, tmp_path):
    """Issue: a finished sweep with a PRM engine aborted at exit (status 134) in most tries.
    A real vLLM policy and the toy PRM's engine settings (on the session's small trained
    checkpoint), a two-job sweep through the real CLI, five times."""
    from evals.sweep_status import sweep_status

    out, _ = trained_prm
    for attempt in range(5):
        sweep = tmp_path / f"sweep{attempt}"
        proc = subprocess.run(
            [
                sys.executable, "-m", "itc.cli.run", "-m",
                "strategy=best_of_n,beam_search", "prm=toy", f"prm.model={out}/checkpoint",
                "n=4", "dataset.num_problems=4", "policy.vllm.enforce_eager=true",
                f"hydra.sweep.dir={sweep}",
            ],
            capture_output=True, text=True, env=_env(), timeout=900,
        )
        assert proc.returncode == 0, f"attempt {attempt}: status {proc.returncode}\n{proc.stderr[-3000:]}"
        assert "terminate called" not in proc.stderr
        status = sweep_status(sweep)
        assert status is not None and status.ok and len(status.complete) == 2
