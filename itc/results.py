"""Run outputs: ``results.jsonl`` (append-only, resumable) and ``metrics.json`` (atomic)."""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from itc.errors import InputError
from itc.stats import bootstrap_mean, rounded

RESULTS_FILE = "results.jsonl"
PLAN_FILE = "plan.json"  # written at a run's start: its problem count, shard and overrides
METRICS_FILE = "metrics.json"
CONFIG_FILE = "run_config.json"
TMP_SUFFIX = ".tmp"


class RunFolderError(InputError):
    """A run folder's file that cannot be read; the message names the file (and line)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[TextIO]:
    """A text file that replaces ``path`` only when the block ends without an error.

    The temporary file sits beside ``path`` and is removed if anything fails; the result
    has the permissions a plain ``open`` gives (the umask's), or those of the file it
    replaces."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            continue
    try:
        with _naming(path):
            os.fchmod(fd, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """An OSError without a file name (a write on a full disk) gets ``path``'s."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def remove_stale_temporaries(folder: str | Path, name: str) -> None:
    """Remove temporary files :func:`atomic_writer` left for ``folder/name`` when its
    process was killed (a failed write removes its own)."""
    for tmp in Path(folder).glob(f".{name}.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (plain dicts) as one level of dotted keys: ``{"a.b": 1}``."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename over ``path``."""
    with atomic_writer(path) as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    """A run folder's JSON file; a truncated or corrupt one is an error naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as e:
        raise RunFolderError(
            f"{path}:{e.lineno}: not valid JSON ({e}); the file is "
            "cut off or corrupt: remove it, or rerun the run that wrote it"
        ) from None
    except UnicodeDecodeError:
        raise RunFolderError(f"{path}: not valid UTF-8; remove it, or rerun the run that wrote it") from None


def _parse_results(data: bytes, path: Path) -> tuple[list[dict[str, Any]], list[bytes], list[bytes]]:
    """The records of a results file's bytes, the good lines and all lines; a line cut off
    at the end is left out, a corrupt line elsewhere is an error naming it."""
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records: list[dict[str, Any]] = []
    good: list[bytes] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
            good.append(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if i != len(lines) - 1:
                raise RunFolderError(
                    f"{path}:{i + 1}: corrupt line in the middle of the results; "
                    "fix or remove that line before resuming"
                ) from None
    return records, good, lines


def read_results(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run folder's records, read only (a run may still be writing): a line cut off at the
    end is left out, and the file is never rewritten."""
    path = Path(run_dir) / RESULTS_FILE
    return _parse_results(path.read_bytes(), path)[0]


class ResultsStore:
    """One JSON line per finished problem, flushed and fsynced as it is written.

    Opening an existing store keeps every complete line; a line cut off by a crash is
    dropped (the file is rewritten atomically without it), so its problem runs again.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        for name in (RESULTS_FILE, METRICS_FILE, CONFIG_FILE):
            remove_stale_temporaries(self.path.parent, name)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        self.records, good, lines = _parse_results(data, self.path)
        if len(good) != len([x for x in lines if x.strip()]) or (data and not data.endswith(b"\n")):
            with atomic_writer(self.path) as f:
                f.write("".join(line.decode("utf-8") + "\n" for line in good))

    @property
    def done_ids(self) -> set[str]:
        return {r["problem_id"] for r in self.records}

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with _naming(self.path), self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)


def summarize(records: list[dict[str, Any]], **header: Any) -> dict[str, Any]:
    """Metrics over result records: accuracy overall, per level and under every selection
    rule the records hold, tokens sent and computed, FLOPs, time. Records written before
    computed tokens were recorded count every token sent as computed."""
    by_level: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        by_level[str(r.get("level"))].append(bool(r["correct"]))
    n = len(records)

    def total(key: str, fallback: str | None = None) -> int | float:
        return sum(r.get(key, r.get(fallback, 0) if fallback else 0) for r in records)

    completion = total("completion_tokens")
    correct = [bool(r["correct"]) for r in records]
    rules = list(records[0].get("correct_by_selection") or {}) if records else []
    rules = [rule for rule in rules if all(rule in (r.get("correct_by_selection") or {}) for r in records)]
    selections = {r.get("selection") for r in records}
    return {
        **header,
        "selection": selections.pop() if len(selections) == 1 else None,
        "num_problems": n,
        "num_correct": sum(bool(r["correct"]) for r in records),
        "accuracy": sum(bool(r["correct"]) for r in records) / n if n else 0.0,
        "accuracy_by_level": {
            lvl: sum(v) / len(v) for lvl, v in sorted(by_level.items(), key=lambda kv: kv[0])
        },
        # 95% bootstrap intervals over problems (itc.stats), seeded
        "accuracy_ci": rounded(bootstrap_mean(correct)),
        "accuracy_by_level_ci": {lvl: rounded(bootstrap_mean(v)) for lvl, v in sorted(by_level.items())},
        "accuracy_by_selection": {
            rule: sum(bool(r["correct_by_selection"][rule]) for r in records) / n for rule in rules
        },
        "accuracy_by_selection_ci": {
            rule: rounded(bootstrap_mean([bool(r["correct_by_selection"][rule]) for r in records]))
            for rule in rules
        },
        "problems_by_level": {lvl: len(v) for lvl, v in sorted(by_level.items())},
        "coverage": sum(any(c.get("correct") for c in r["candidates"]) for r in records) / n if n else 0.0,
        "prompt_tokens": total("prompt_tokens"),
        "prompt_tokens_computed": total("prompt_tokens_computed", "prompt_tokens"),
        "completion_tokens": completion,
        "completion_tokens_per_problem": completion / n if n else 0.0,
        "prm_tokens": total("prm_tokens"),
        "prm_tokens_computed": total("prm_tokens_computed", "prm_tokens"),
        # PRM tokens itc-run spent scoring a non-PRM strategy's candidates for the record:
        # not the strategy's compute, and not in its FLOPs
        "scoring_prm_tokens": total("scoring_prm_tokens"),
        "scoring_prm_tokens_computed": total("scoring_prm_tokens_computed"),
        "policy_flops": total("policy_flops"),
        "prm_flops": total("prm_flops"),
        "flops_per_problem": (total("policy_flops") + total("prm_flops")) / n if n else 0.0,
        "wall_seconds": round(sum(r.get("wall_seconds", 0.0) for r in records), 3),
    }
