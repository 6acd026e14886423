"""Run outputs: ``results.jsonl`` (append-only, resumable) and ``metrics.json`` (atomic)."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.jsonl"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "run_config.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultsStore:
    """One JSON line per finished problem, flushed and fsynced as it is written.

    Opening an existing store keeps every complete line; a line cut off by a crash is
    dropped (the file is rewritten atomically without it), so its problem runs again.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / RESULTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good: list[str] = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                self.records.append(json.loads(line))
                good.append(line)
            except json.JSONDecodeError:
                if i != len(lines) - 1:
                    raise ValueError(
                        f"{self.path}:{i + 1}: corrupt line in the middle of the results; "
                        "fix or remove that line before resuming"
                    ) from None
        if len(good) != len([x for x in lines if x.strip()]):
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in good))
            os.replace(tmp, self.path)

    @property
    def done_ids(self) -> set[str]:
        return {r["problem_id"] for r in self.records}

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
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
        "accuracy_by_selection": {
            rule: sum(bool(r["correct_by_selection"][rule]) for r in records) / n for rule in rules
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
