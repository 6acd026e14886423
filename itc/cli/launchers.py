"""The Hydra launchers an ``itc-run -m`` sweep can run on, and their optional extras.

``configs/hydra/launcher/`` holds ``slurm`` (submitit on Slurm; ``submitit_local`` runs the
same jobs as local processes) and ``ray`` (a Ray task per job on a Ray cluster). Their plugins
are optional extras; choosing one that is not installed is a clear error that names the
override and the install, before anything starts (docs/cluster.md).
"""

from __future__ import annotations

import importlib
import os
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from itc.errors import InputError

_SUBMITIT = ("slurm", ("submitit", "hydra_plugins.hydra_submitit_launcher.submitit_launcher"))
_RAY = ("ray", ("ray", "hydra_plugins.hydra_ray_launcher.ray_launcher"))
# hydra/launcher choice -> (the extra that brings it, the modules it needs)
LAUNCHERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "slurm": _SUBMITIT,
    "submitit_slurm": _SUBMITIT,
    "submitit_local": _SUBMITIT,
    "ray": _RAY,
    "ray_aws": _RAY,
}
_CHOICE = re.compile(r"^[+~]{0,2}hydra/launcher=(.*)$")


def chosen_launchers(argv: Sequence[str]) -> list[str]:
    """The ``hydra/launcher=...`` choices on a command line (a sweep may list several)."""
    out = []
    for arg in argv:
        m = _CHOICE.match(arg)
        if m:
            out += [c.strip() for c in m[1].split(",") if c.strip()]
    return out


def check_launchers(argv: Sequence[str]) -> None:
    """Raise InputError when a chosen launcher's plugin (or what it needs) does not import."""
    for choice in chosen_launchers(argv):
        if choice not in LAUNCHERS:
            continue  # Hydra's own (basic) or one it reports itself
        extra, modules = LAUNCHERS[choice]
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise InputError(
                    f"hydra/launcher={choice} needs the optional extra [{extra}], which is not "
                    f"installed ({e}): pip install -e \".[{extra}]\" (or pip install \"itc[{extra}]\")"
                ) from None


def ray_address(init_address: str | None) -> str | None:
    """The Ray cluster ``ray.init`` will join: ``hydra.launcher.ray.init.address``, else
    ``$RAY_ADDRESS``; None to start a local instance."""
    return init_address or os.environ.get("RAY_ADDRESS") or None


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """Raise InputError when ``address`` (``host:port`` or ``ray://host:port``) does not
    accept a connection within ``timeout`` seconds: ``ray.init`` would wait minutes for it."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise InputError(unreachable(address, why)) from None


def unreachable(address: str | None, why: str) -> str:
    return (
        f"cannot reach the Ray cluster at {address} ({why}); set "
        f"hydra.launcher.ray.init.address=HOST:PORT (or $RAY_ADDRESS) to a running cluster's "
        f"address, e.g. one started with `ray start --head`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_processes_of(marker: str) -> None:
    """Kill the processes whose command line names ``marker`` and their descendants (not
    this process or its parents), by pid."""
    import psutil

    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    roots = [
        p for p in psutil.process_iter(["cmdline"])
        if p.pid not in me and any(marker in a for a in (p.info["cmdline"] or []))
    ]
    procs = {c.pid: c for r in roots for c in r.children(recursive=True)} | {r.pid: r for r in roots}
    for p in procs.values():
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(list(procs.values()), timeout=30)


@contextmanager
def local_ray_head(num_cpus: int = 2, object_store_mb: int = 200) -> Iterator[str]:
    """A Ray head on 127.0.0.1 for the block (``ray start --head``, no dashboard, no GPU),
    started with this process's environment (its workers import the same code); yields its
    address. Stopped by killing the processes it started, found by its own temporary folder
    (``ray stop`` would stop every Ray instance on the machine). For tests and benchmarks."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    temp = tempfile.mkdtemp(prefix="itcray", dir="/tmp")  # short: Ray's socket paths have a limit
    port = free_port()
    # Ray runs its workers at nice 15; on a shared machine the jobs would wait behind
    # everything else, so they run at the caller's priority
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--num-cpus", str(num_cpus),
        "--num-gpus", "0", "--include-dashboard=false", "--node-ip-address", "127.0.0.1",
        "--port", str(port), "--temp-dir", temp, "--disable-usage-stats",
        "--object-store-memory", str(object_store_mb << 20),
    ]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{proc.stdout}\n{proc.stderr}")
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)
