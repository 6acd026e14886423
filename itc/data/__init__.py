"""Datasets into one problem type: MATH (Hendrycks format), MATH-500 and the toy world."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from itc.errors import InputError
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


class DatasetError(InputError):
    """A dataset file or record that cannot be read; the message names where."""


def _parse_level(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    m = re.search(r"\d+", str(value or ""))
    return int(m.group()) if m else None


def binary_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of a file, undecoded (see :func:`decode_utf8`)."""
    with path.open("rb") as f:
        yield from enumerate(f, 1)


def decode_utf8(raw: bytes) -> str:
    """``raw`` as UTF-8; ``ValueError`` saying where it is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, raw in binary_lines(path):
        where = f"{path}:{lineno}"
        try:
            line = decode_utf8(raw)
        except ValueError as e:
            raise DatasetError(f"{where}: {e}") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def _read_json(path: Path) -> Any:
    """A whole ``.json`` file; errors name the file and line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DatasetError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _answer_text(value: Any) -> str | None:
    """A record's answer as text: strings as they are, numbers as written (12, 0.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def math_record_to_problem(record: Any, where: str, default_id: str) -> Problem:
    """One MATH or MATH-500 record; ``answer`` falls back to the solution's last box."""
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if not isinstance(record.get("problem"), str):
        raise DatasetError(f"{where}: record has no 'problem' string")
    solution = record.get("solution")
    answer = _answer_text(record.get("answer"))
    if record.get("answer") is not None and answer is None:
        raise DatasetError(f"{where}: 'answer' is {record['answer']!r}, not a string or number")
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
            rel = f.relative_to(path).as_posix()
            problems.append(math_record_to_problem(_read_json(f), str(f), rel))
    elif path.suffix == ".json":
        records = _read_json(path)
        if not isinstance(records, list):
            raise DatasetError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
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
    problems = problems[:limit] if limit else problems
    if not problems:
        source = c.get("path") or c.get("hub_name") or kind
        raise DatasetError(
            f"dataset {c.get('name')!r} ({source}) selected no problems"
            + (" after the levels/subjects filters" if c.get("levels") or c.get("subjects") else "")
        )
    return problems


__all__ = ["DatasetError", "binary_lines", "decode_utf8", "load_math_hub", "load_math_local", "load_problems", "math_record_to_problem"]
