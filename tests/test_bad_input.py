"""Bad input through the real CLIs: each ends with one line ``<command>: error: ...`` naming
the file:line, key or path, and exit status 2; settings are checked before any engine starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = json.dumps({"problem": "What is 1+1?", "answer": "2"})


def cli(module: str, args: list[str], cwd: Path, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    """``python -m itc.cli.<module> args`` from this checkout (PYTHONPATH is kept)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    cmd = [*(wrap or []), sys.executable, "-m", f"itc.cli.{module}", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def error_line(proc: subprocess.CompletedProcess, prog: str) -> str:
    """The one error line; asserts exit status 2 and no traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [x for x in proc.stderr.splitlines() if x.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


# (overrides, what the message must name): settings of the wrong type or out of range
CONFIG_ERRORS = [
    (["policy.sampling.temperature=-1"], "policy.sampling.temperature=-1: expected a number (>= 0)"),
    (["policy.sampling.top_p=1.5"], "policy.sampling.top_p=1.5"),
    (["policy.sampling.max_tokens=0"], "policy.sampling.max_tokens=0"),
    (["batch_size=0"], "batch_size=0: expected an integer (>= 1)"),
    (["n=abc"], "n=abc: expected an integer (>= 1)"),
    (["dataset.limit=-5"], "dataset.limit=-5"),
    (["dataset.limit=0"], "dataset.limit=0"),
    (["dataset.limit=2.5"], "dataset.limit=2.5: expected an integer or null (>= 1)"),
    (["prm=toy", "prm.aggregation=max"], "prm.aggregation=max: expected one of last, min, product, mean"),
    (["policy.backend=tgi"], "policy.backend=tgi: expected one of vllm, hf, openai"),
    (["no_such_option=1"], "no_such_option"),
]


@pytest.mark.parametrize("overrides, named", CONFIG_ERRORS, ids=[" ".join(o) for o, _ in CONFIG_ERRORS])
def test_invalid_settings_stop_before_any_engine(tmp_path, overrides, named):
    proc = cli("run", [*overrides, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    line = error_line(proc, "itc-run")
    assert named in line
    rest = (proc.stdout + proc.stderr).replace(line, "")
    assert "vllm" not in rest.lower() and "EngineCore" not in rest  # no engine was started
    assert not (tmp_path / "run" / "run_config.json").exists()


# (file name, content, what the message must name)
DATA_ERRORS = [
    ("empty.jsonl", b"", "empty.jsonl) selected no problems"),
    ("bad.json", b'[{"problem": "x", "answer": "1"},\n {"problem": ', "bad.json:2: not valid JSON"),
    ("list.json", b'["a string"]', "list.json[0]: expected a JSON object, got str"),
    ("utf.jsonl", GOOD.encode() + b'\n{"problem": "\xff", "answer": "1"}\n', "utf.jsonl:2: not valid UTF-8"),
    ("noanswer.jsonl", GOOD.encode() + b'\n{"problem": "x", "answer": [1]}\n', "noanswer.jsonl:2: 'answer' is [1]"),
]


@pytest.mark.parametrize("name, content, named", DATA_ERRORS, ids=[d[0] for d in DATA_ERRORS])
def test_unreadable_datasets_name_file_and_line(tmp_path, name, content, named):
    path = _write(tmp_path / name, content)
    proc = cli("run", ["dataset=math500", f"dataset.path={path}", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert named in error_line(proc, "itc-run")


def test_a_corrupt_line_in_the_middle_of_the_results(tmp_path):
    run = tmp_path / "run"
    lines = [json.dumps({"problem_id": f"p{i}", "correct": False, "candidates": []}) for i in range(3)]
    _write(run / "results.jsonl", "\n".join([lines[0], lines[1][:15], lines[2]]).encode() + b"\n")
    proc = cli("run", [f"hydra.run.dir={run}"], tmp_path)
    assert f"{run / 'results.jsonl'}:2: corrupt line in the middle" in error_line(proc, "itc-run")


def test_a_truncated_metrics_file_names_it(tmp_path):
    _write(tmp_path / "sweep" / "a" / "metrics.json", b'{"strategy": "majority", "n": 4, "accur')
    proc = cli("curves", [str(tmp_path / "sweep")], tmp_path)
    assert f"{tmp_path / 'sweep' / 'a' / 'metrics.json'}:1: not valid JSON" in error_line(proc, "itc-curves")
    debug = cli("curves", ["--debug", str(tmp_path / "sweep")], tmp_path)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "RunFolderError" in debug.stderr


def test_prm800k_data_with_invalid_utf8_names_file_and_line(tmp_path):
    good = (FIXTURES / "prm" / "prm800k_small.jsonl").read_bytes().splitlines()[0]
    path = _write(tmp_path / "p.jsonl", good + b"\n" + good.replace(b'"question"', b'"q\xffuestion"', 1) + b"\n")
    proc = cli(
        "eval_prm",
        ["toy.enabled=false", f"files=[{{path: {path}, format: prm800k}}]", f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
    )
    assert f"{path}:2: not valid UTF-8" in error_line(proc, "itc-eval-prm")


def test_an_engine_that_fails_to_load_names_the_backend(tmp_path):
    proc = cli(
        "run",
        ["policy.backend=hf", f"policy.model={tmp_path / 'no-model'}", "dataset.num_problems=1", f"hydra.run.dir={tmp_path / 'run'}"],
        tmp_path,
    )
    assert f"policy 'toy': the hf backend failed to load '{tmp_path / 'no-model'}'" in error_line(proc, "itc-run")


def test_debug_shows_the_traceback(tmp_path):
    proc = cli("run", ["--debug", "batch_size=0", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "ConfigError" in proc.stderr


def _private_tmpfs() -> list[str] | None:
    """A prefix that runs a command in its own mount namespace (tmpfs mounts there vanish
    with it), or None where this system does not allow one."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    ok = subprocess.run([unshare, "-rm", "true"], capture_output=True)
    return [unshare, "-rm", "sh", "-c"] if ok.returncode == 0 else None


def test_a_read_only_run_folder(tmp_path):
    prefix = _private_tmpfs()
    if prefix is None:
        pytest.skip("no private mount namespace here")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    run = mnt / "run"
    script = (
        f"mount -t tmpfs -o ro,size=1m tmpfs {mnt} && exec \"$0\" -m itc.cli.run hydra.run.dir={run}"
    )
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([*prefix, script, sys.executable], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert f"Read-only file system: {run}" in error_line(proc, "itc-run")


def test_a_full_disk(tmp_path, toy_policy_path):
    prefix = _private_tmpfs()
    if prefix is None:
        pytest.skip("no private mount namespace here")
    mnt = tmp_path / "full"
    mnt.mkdir()
    run = mnt / "run"
    script = (
        f"mount -t tmpfs -o size=256k tmpfs {mnt} && mkdir -p {run} && "
        f"(dd if=/dev/zero of={mnt}/filler bs=4k 2>/dev/null; true) && exec \"$0\" -m itc.cli.run "
        f"policy.backend=hf strategy=greedy dataset.num_problems=1 hydra.run.dir={run} "
        f"hydra.job_logging.handlers.file.filename={tmp_path / 'run.log'}"
    )
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([*prefix, script, sys.executable], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    line = error_line(proc, "itc-run")
    assert "No space left on device: " in line and str(run) in line


def test_a_dead_engine_is_an_error_naming_the_backend():
    from itc.errors import BackendError
    from itc.policy.vllm_backend import engine_failures

    dead = pytest.importorskip("vllm.v1.engine.exceptions").EngineDeadError
    with pytest.raises(BackendError, match="policy 'toy': the vllm engine failed \\(EngineDeadError"):
        with engine_failures("policy 'toy'"):
            raise dead()
    with pytest.raises(KeyError):  # anything else is not the engine's failure
        with engine_failures("policy 'toy'"):
            raise KeyError("bug")
