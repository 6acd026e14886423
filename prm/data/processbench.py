"""ProcessBench files: ``{"problem", "steps", "label"}`` with ``label`` the index of the first
wrong step, or -1 when every step is right (Zheng et al., 2024). JSON (a list; the record number stands for the line in errors) or JSONL."""

from __future__ import annotations

import json
from pathlib import Path

from prm.data.records import LoadResult, PRMDataError, StepLabelled, load_records


def _convert(raw: dict) -> list[StepLabelled]:
    """One record; ``ValueError`` (the loader adds file and line) when malformed."""
    for key in ("problem", "steps", "label"):
        if key not in raw:
            raise ValueError(f"missing field {key!r}")
    steps, label = raw["steps"], raw["label"]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ValueError("'steps' must be a non-empty list of strings")
    if isinstance(label, bool) or not isinstance(label, int) or not -1 <= label < len(steps):
        raise ValueError(f"'label' must be -1 or a step index below {len(steps)}, got {label!r}")
    labels = [1.0 if label < 0 or i < label else 0.0 for i in range(len(steps))]
    meta = {"id": raw.get("id"), "generator": raw.get("generator"), "first_error": label}
    return [StepLabelled(raw["problem"], steps, labels, source="processbench", meta=meta)]


def load_processbench(path: str | Path, skip_bad: bool = False) -> LoadResult:
    """A ProcessBench split as step-labelled records (``meta["first_error"]`` keeps ``label``)."""
    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise PRMDataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise PRMDataError(f"{path}:1: expected a JSON list of records")
        result = LoadResult()
        for i, raw in enumerate(rows, 1):
            try:
                if not isinstance(raw, dict):
                    raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
                result.records.extend(_convert(raw))
            except ValueError as e:
                if not skip_bad:
                    raise PRMDataError(f"{path}:{i}: {e}") from None
                result.skipped += 1
                result.skipped_where.append(f"{path}:{i}: {e}")
        return result
    return load_records(path, lambda raw, _res, _file, _line: _convert(raw), skip_bad)
