"""Math-Shepherd records (``{"input", "label", "task"}``) into step-labelled solutions.

In ``input`` every step ends with the tag ``ки``; ``label`` is the same text with each tag
replaced by ``+`` (good, 1.0) or ``-`` (bad, 0.0). The question is the text before the first
``Step 1:``; a step is the text up to its tag, stripped, without its ``Step N:`` prefix (the
Math-Shepherd prompt format adds it back). Fields other than ``input``, ``label`` and ``task``
are ignored. Math-Shepherd has no gold answer (``gold_answer`` is None); ``task`` goes to
``meta["task"]`` and the raw ``+``/``-`` string to ``meta["raw_labels"]``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from prm.data.records import LoadResult, StepLabelled, load_records

TAG = "ки"
_FIRST_STEP = re.compile(r"Step\s*1\s*:")
_STEP_PREFIX = re.compile(r"^Step\s*\d+\s*:\s*")


def parse_math_shepherd(text: str, label: str) -> tuple[str, list[str], str]:
    """Question, step texts and the ``+``/``-`` string; ``ValueError`` if they do not match."""
    if TAG not in text:
        raise ValueError(f"'input' has no {TAG!r} step tag")
    segments = text.split(TAG)
    n_tags = len(segments) - 1
    if len(label) != len(text) - n_tags * (len(TAG) - 1):
        raise ValueError(
            f"'label' has {len(label)} characters where {len(text) - n_tags * (len(TAG) - 1)} "
            f"are expected for the {n_tags} step tag(s) in 'input' (label/tag count mismatch?)"
        )
    marks = []
    pos = 0
    for k, seg in enumerate(segments[:-1]):
        if not label.startswith(seg, pos):
            raise ValueError(
                f"'label' differs from 'input' before step tag {k + 1} "
                f"(at character {pos + _mismatch(seg, label[pos:])} of 'label')"
            )
        pos += len(seg)
        mark = label[pos : pos + 1]
        if mark not in ("+", "-"):
            raise ValueError(
                f"'label' has {mark!r} where 'input' has step tag {k + 1} of {n_tags} "
                "(expected '+' or '-')"
            )
        marks.append(mark)
        pos += 1
    if label[pos:] != segments[-1]:
        raise ValueError("'label' differs from 'input' after the last step tag")
    if segments[-1].strip():
        raise ValueError(f"'input' has text after its last {TAG!r} tag (a step without a tag)")

    m = _FIRST_STEP.search(segments[0])
    if m is None:
        raise ValueError("'input' has no 'Step 1:' to split the question from the steps")
    question = segments[0][: m.start()].strip()
    if not question:
        raise ValueError("'input' has no question before 'Step 1:'")
    segments[0] = segments[0][m.start() :]
    steps = []
    for k, seg in enumerate(segments[:-1]):
        step = _STEP_PREFIX.sub("", seg.strip())
        if not step:
            raise ValueError(f"step {k + 1} is empty")
        steps.append(step)
    return question, steps, "".join(marks)


def _mismatch(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _convert(raw: dict[str, Any], file: Path, lineno: int) -> list[StepLabelled]:
    for key in ("input", "label"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"no {key!r} string")
    task = raw.get("task")
    if task is not None and not isinstance(task, str):
        raise ValueError(f"'task' is {task!r}, not a string")
    question, steps, marks = parse_math_shepherd(raw["input"], raw["label"])
    labels = [1.0 if m == "+" else 0.0 for m in marks]
    meta = {"task": task, "raw_labels": marks, "file": file.name, "line": lineno}
    return [StepLabelled(question, steps, labels, None, "math_shepherd", meta)]


def load_math_shepherd(path: str | Path, skip_bad: bool = False) -> LoadResult:
    """Math-Shepherd JSONL (a file or a folder of them) as step-labelled records.

    A malformed record (bad JSON, missing field, label/tag mismatch) raises
    :class:`PRMDataError` naming file and line; with ``skip_bad`` it is counted instead.
    """
    return load_records(path, lambda raw, _res, file, lineno: _convert(raw, file, lineno), skip_bad)
