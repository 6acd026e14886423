"""The step-labelled record, load results, JSONL helpers and the TRL PRM export."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itc.data import DatasetError, binary_lines, decode_utf8
from itc.results import atomic_writer

log = logging.getLogger(__name__)

SOURCES = ("prm800k", "math_shepherd", "processbench", "auto", "toy")
TRL_THRESHOLD = 0.5


class PRMDataError(DatasetError):
    """A PRM data file or record that cannot be read; the message starts with ``file:line:``."""


@dataclass
class StepLabelled:
    """One solution split into steps, each with a label in [0, 1].

    Labels: hard labels are 1.0 (good) / 0.0 (bad) after the neutral policy has been applied;
    soft labels (automatic Math-Shepherd-style estimates) are the fraction of rollouts from
    that step that reached the gold answer. Raw ratings, when a source has them, are kept in
    ``meta`` (PRM800K: ``meta["ratings"]``, +1/0/-1 or None).
    """

    problem: str
    steps: list[str]
    labels: list[float]
    gold_answer: str | None = None
    source: str = "toy"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` unless the record is consistent."""
        if not isinstance(self.problem, str):
            raise ValueError("'problem' must be a string")
        if not isinstance(self.steps, list) or not all(isinstance(s, str) for s in self.steps):
            raise ValueError("'steps' must be a list of strings")
        if not self.steps:
            raise ValueError("a record needs at least one step")
        if not isinstance(self.labels, list) or len(self.labels) != len(self.steps):
            raise ValueError(
                f"{len(self.steps)} steps but "
                f"{len(self.labels) if isinstance(self.labels, list) else 'no list of'} labels"
            )
        for i, label in enumerate(self.labels):
            if isinstance(label, bool) or not isinstance(label, (int, float)):
                raise ValueError(f"label {i} is {label!r}, not a number")
            if not (math.isfinite(label) and 0.0 <= label <= 1.0):
                raise ValueError(f"label {i} is {label!r}, outside [0, 1]")
        self.labels = [float(x) for x in self.labels]
        if self.gold_answer is not None and not isinstance(self.gold_answer, str):
            raise ValueError("'gold_answer' must be a string or null")
        if self.source not in SOURCES:
            raise ValueError(f"'source' is {self.source!r}, not one of {', '.join(SOURCES)}")
        if not isinstance(self.meta, dict):
            raise ValueError("'meta' must be an object")

    def first_error(self, threshold: float = TRL_THRESHOLD) -> int:
        """Index of the first step labelled below ``threshold``, or -1 (ProcessBench style)."""
        return next((i for i, x in enumerate(self.labels) if x < threshold), -1)

    def up_to_first_error(self, threshold: float = TRL_THRESHOLD) -> StepLabelled:
        """The record ended at its first bad step, as PRM800K's phase-2 labellers stopped."""
        k = self.first_error(threshold)
        if k < 0:
            return self
        return StepLabelled(
            self.problem, self.steps[: k + 1], self.labels[: k + 1], self.gold_answer,
            self.source, dict(self.meta),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "steps": list(self.steps),
            "labels": list(self.labels),
            "gold_answer": self.gold_answer,
            "source": self.source,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepLabelled:
        """The inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed dict."""
        if not isinstance(d, dict):
            raise ValueError("expected a JSON object")
        missing = [k for k in ("problem", "steps", "labels") if k not in d]
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        return cls(
            problem=d["problem"],
            steps=d["steps"],
            labels=d["labels"],
            gold_answer=d.get("gold_answer"),
            source=d.get("source", "toy"),
            meta=d.get("meta") or {},
        )


@dataclass
class LoadResult:
    """What a loader read: the records, and what it left out.

    ``skipped`` counts malformed records skipped under ``skip_bad=True``; ``skipped_where``
    holds one ``"file:line: reason"`` per skipped record. ``excluded`` counts well-formed
    records left out by policy, by reason (e.g. ``"bad_problem"``). Iterating, ``len`` and
    indexing go to ``records``.
    """

    records: list[StepLabelled] = field(default_factory=list)
    skipped: int = 0
    skipped_where: list[str] = field(default_factory=list)
    excluded: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[StepLabelled]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> StepLabelled:
        return self.records[i]

    def exclude(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1


def jsonl_files(path: str | Path) -> list[Path]:
    """A JSONL file, or every ``*.jsonl`` file under a folder (sorted)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"PRM data path {str(p)!r} does not exist")
    if p.is_dir():
        files = sorted(p.rglob("*.jsonl"))
        if not files:
            raise PRMDataError(f"{p}: folder holds no .jsonl files")
        return files
    return [p]


def load_records(
    path: str | Path,
    convert: Callable[[dict[str, Any], LoadResult, Path, int], list[StepLabelled]],
    skip_bad: bool,
) -> LoadResult:
    """Run ``convert`` over every JSON line under ``path``.

    ``convert`` raises ``ValueError`` (any message) for a malformed record; it is re-raised
    as :class:`PRMDataError` naming file and line, or counted and skipped with ``skip_bad``.
    """
    result = LoadResult()
    for file in jsonl_files(path):
        skipped_before = result.skipped
        for lineno, raw_line in binary_lines(file):
            if not raw_line.strip():
                continue
            try:
                try:
                    raw = json.loads(decode_utf8(raw_line).rstrip("\r\n"))
                except json.JSONDecodeError as e:
                    msg = f"not valid JSON ({e.msg} at column {e.pos + 1})"
                    raise ValueError(msg) from None
                if not isinstance(raw, dict):
                    raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
                records = convert(raw, result, file, lineno)
            except ValueError as e:
                where = f"{file}:{lineno}: {e}"
                if not skip_bad:
                    raise PRMDataError(where) from None
                result.skipped += 1
                result.skipped_where.append(where)
                continue
            result.records.extend(records)
        if result.skipped > skipped_before:
            log.warning(
                "%s: skipped %d malformed record(s)", file, result.skipped - skipped_before
            )
    return result


def _write_lines_atomic(lines: Iterable[dict[str, Any]], path: str | Path) -> int:
    n = 0
    with atomic_writer(Path(path).expanduser()) as f:
        for obj in lines:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_jsonl(records: Iterable[StepLabelled], path: str | Path) -> int:
    """Write records as JSONL (temp file + ``os.replace``); returns how many."""
    return _write_lines_atomic((r.to_dict() for r in records), path)


def read_jsonl(path: str | Path, skip_bad: bool = False) -> LoadResult:
    """Read step-labelled JSONL written by :func:`write_jsonl` (file or folder)."""
    return load_records(path, lambda raw, _res, _f, _n: [StepLabelled.from_dict(raw)], skip_bad)


def to_trl(record: StepLabelled, threshold: float = TRL_THRESHOLD) -> dict[str, Any]:
    """TRL's PRM row: ``{"prompt", "completions", "labels"}``; a label is True when >= threshold."""
    return {
        "prompt": record.problem,
        "completions": list(record.steps),
        "labels": [label >= threshold for label in record.labels],
    }


def export_trl(
    records: Iterable[StepLabelled], path: str | Path, threshold: float = TRL_THRESHOLD
) -> int:
    """Write records in TRL's PRM format as JSONL (atomically); returns how many."""
    return _write_lines_atomic((to_trl(r, threshold) for r in records), path)
