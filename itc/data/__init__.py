"""Datasets into one problem type: MATH (Hendrycks format), MATH-500 and the toy world."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from itc.grading.answers import extract_boxed
from itc.types import Problem

MATH500_HUB = "HuggingFaceH4/MATH-500"
MATH_HUB = "EleutherAI/hendrycks_math"
MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


class DatasetError(ValueError):
    """A dataset file or record that cannot be read; the message names where."""


def _parse_level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    m = re.search(r"\d+", str(value or ""))
    return int(m.group()) if m else None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, record


def math_record_to_problem(record: dict[str, Any], where: str, default_id: str) -> Problem:
    """One MATH or MATH-500 record; ``answer`` falls back to the solution's last box."""
    if not isinstance(record.get("problem"), str):
        raise DatasetError(f"{where}: record has no 'problem' string")
    solution = record.get("solution")
    answer = record.get("answer")
    if answer is None and isinstance(solution, str):
        answer = extract_boxed(solution)
    if not isinstance(answer, str) or not answer.strip():
        raise DatasetError(f"{where}: record has no 'answer' and no \\boxed{{}} in 'solution'")
    subject = record.get("subject") or record.get("type")
    return Problem(
        id=str(record.get("unique_id") or record.get("id") or default_id),
        problem=record["problem"],
        answer=answer.strip(),
        level=_parse_level(record.get("level")),
        subject=subject,
        solution=solution,
    )


def load_math_local(path: str | Path) -> list[Problem]:
    """A JSONL/JSON file of MATH-format records, or a MATH folder (``<subject>/<n>.json``)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"dataset path {str(path)!r} does not exist")
    problems: list[Problem] = []
    if path.is_dir():
        files = sorted(path.rglob("*.json"))
        if not files:
            raise DatasetError(f"{path}: folder holds no .json MATH records")
        for f in files:
            try:
                record = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{f}: not valid JSON ({e.msg})") from None
            rel = f.relative_to(path).as_posix()
            problems.append(math_record_to_problem(record, str(f), rel))
    elif path.suffix == ".json":
        records = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(records, list):
            raise DatasetError(f"{path}: expected a JSON list of records")
        for i, record in enumerate(records):
            problems.append(math_record_to_problem(record, f"{path}[{i}]", f"{path.stem}-{i}"))
    else:
        for lineno, record in _read_jsonl(path):
            problems.append(
                math_record_to_problem(record, f"{path}:{lineno}", f"{path.stem}-{lineno}")
            )
    return problems


def load_math_hub(name: str, split: str, subjects: list[str] | None = None) -> list[Problem]:
    """MATH or MATH-500 from the Hugging Face hub (needs network access)."""
    import datasets

    try:
        if name == MATH_HUB:
            parts = [
                (s, datasets.load_dataset(name, s, split=split)) for s in subjects or MATH_SUBJECTS
            ]
        else:
            parts = [("", datasets.load_dataset(name, split=split))]
    except Exception as e:  # noqa: BLE001 - any hub failure gets the same advice
        raise DatasetError(
            f"could not load {name!r} (split {split!r}) from the hub: {e}. Without network "
            "access, download the data elsewhere and pass dataset.path=<local file or folder>"
        ) from e
    problems = []
    for subject, ds in parts:
        for i, record in enumerate(ds):
            problems.append(
                math_record_to_problem(dict(record), f"{name}[{i}]", f"{split}/{subject}/{i}")
            )
    return problems


def load_toy(num_problems: int, seed: int, levels: list[int], long_chain_steps: int | None = None):
    from itc.toy import generate

    return [
        p.to_problem()
        for p in generate(num_problems, seed, tuple(levels), "test", long_chain_steps)
    ]


def load_problems(cfg: DictConfig | dict[str, Any]) -> list[Problem]:
    """Problems for a ``dataset`` config group entry, filtered and truncated as configured."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    kind = c.get("kind")
    if kind == "toy":
        problems = load_toy(c["num_problems"], c.get("seed", 0), c["levels"], c.get("long_chain_steps"))
    elif kind in ("math", "math500"):
        if c.get("path"):
            problems = load_math_local(c["path"])
        else:
            problems = load_math_hub(c["hub_name"], c.get("split", "test"), c.get("subjects"))
        if c.get("subjects"):
            wanted = {s.lower().replace(" ", "_").replace("&", "and") for s in c["subjects"]}
            problems = [
                p for p in problems
                if (p.subject or "").lower().replace(" ", "_").replace("&", "and") in wanted
            ]
    else:
        raise DatasetError(f"dataset.kind={kind!r} is not one of toy, math, math500")
    if c.get("levels") and kind != "toy":
        problems = [p for p in problems if p.level in set(c["levels"])]
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"dataset has a duplicate problem id {dup!r}")
    limit = c.get("limit")
    return problems[:limit] if limit else problems


__all__ = ["DatasetError", "load_math_hub", "load_math_local", "load_problems", "math_record_to_problem"]
