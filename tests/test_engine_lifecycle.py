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
        line = proc.stdout.readline()
        assert line, f"the parent exited before it was ready (status {proc.wait(timeout_ready)})"
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
