"""Engine processes never outlive the process that started them, however it dies.

vLLM's in-process ``LLM`` starts an engine-core process, which starts its workers. The
workers exit when the engine core dies (vLLM's death pipe), but the engine core does not
watch its own parent: after ``kill -9`` of the parent (a scheduler's timeout, the OOM
killer) it keeps running, re-parented to init, holding the model's memory.

So the first engine started in a process also starts a *reaper*: a small child process that
reads the engine processes' ids from a pipe. The pipe's write end lives only in the parent;
when the parent dies, in any way, the kernel closes it, the reaper reads end-of-file and
ends every registered process (SIGTERM, then SIGKILL after a grace period). A process is
identified by its id and start time, so a reused id is never killed. The reaper ignores
SIGINT and SIGTERM sent to the whole process group: it must outlive its parent to clean up.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

import psutil

GRACE_SECONDS = 3.0
POLL_SECONDS = 0.5

_reaper: subprocess.Popen | None = None


def _identity(proc: psutil.Process) -> str:
    return f"{proc.pid} {proc.create_time():.6f}\n"


def child_processes() -> set[int]:
    """Ids of this process's descendants now."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


def reap_on_exit(pids: Iterable[int]) -> None:
    """Register processes to be ended when this process dies (starts the reaper once)."""
    global _reaper
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    if _reaper is not None and _reaper.poll() is not None:
        _reaper = None  # it died (killed by hand): start another
    if _reaper is None:
        _reaper = subprocess.Popen(
            # run as a script, not as a module: no package imports, and it starts in a blink
            [sys.executable, os.path.abspath(__file__), str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # holds no pipe of the parent's open after it exits
            close_fds=True,
            text=True,
        )
    own = _reaper.pid
    lines = "".join(_identity(p) for p in procs if p.pid != own and p.is_running())
    if lines:
        _reaper.stdin.write(lines)
        _reaper.stdin.flush()


def _end(procs: list[psutil.Process]) -> None:
    alive = []
    for p in procs:
        try:
            p.terminate()
            alive.append(p)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=GRACE_SECONDS)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _parent_alive(pid: int) -> bool:
    return os.getppid() == pid


def main() -> None:
    """The reaper: read ``pid start_time`` lines until end-of-file or the parent's death,
    then end those processes. The parent is also polled: a process forked from it after the
    reaper started holds the pipe's write end too, so end-of-file alone could come late."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = int(sys.argv[1])
    watched: list[tuple[int, float]] = []
    fd, buf = sys.stdin.fileno(), b""
    while True:
        alive = _parent_alive(parent)
        # after the parent's death, read what it wrote before without waiting for more
        ready, _, _ = select.select([fd], [], [], POLL_SECONDS if alive else 0)
        chunk = os.read(fd, 65536) if ready else b""
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            pid, started = line.split()
            watched.append((int(pid), float(started)))
        if (ready and not chunk) or (not alive and not ready):
            break
    time.sleep(0.2)  # a parent that exits normally has already shut its engines down
    procs = []
    for pid, started in watched:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 1e-3:
                procs.append(p)
        except psutil.NoSuchProcess:
            pass
    if procs:
        _end(procs)


if __name__ == "__main__":
    main()
