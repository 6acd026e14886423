"""Grading: extract the final answer and compare it with the reference by math-verify."""

from __future__ import annotations

from collections.abc import Sequence

from itc.grading.answers import extract_boxed, normalize
from itc.grading.verify import DEFAULT_TIMEOUT_S, answers_equivalent


def grade(prediction: str, gold: str, timeout: int = DEFAULT_TIMEOUT_S) -> bool:
    """True when the last ``\\boxed{}`` of the solution text ``prediction`` equals ``gold``.

    ``gold`` is a reference answer in LaTeX (with or without surrounding ``$``).
    """
    answer = extract_boxed(prediction)
    return answers_equivalent(answer, gold.strip().strip("$"), timeout)


def group_by_equivalence(
    answers: Sequence[str | None], timeout: int = DEFAULT_TIMEOUT_S
) -> list[int | None]:
    """A class index per answer, equal for equivalent answers (None for no answer).

    Each answer is compared with one representative per existing class, so equivalent
    forms ("0.5", "\\frac12") fall into one vote.
    """
    reps: list[str] = []
    by_norm: dict[str, int] = {}
    classes: list[int | None] = []
    for ans in answers:
        if ans is None:
            classes.append(None)
            continue
        key = normalize(ans)
        if key not in by_norm:
            match = next(
                (i for i, rep in enumerate(reps) if answers_equivalent(ans, rep, timeout)), None
            )
            if match is None:
                reps.append(ans)
                match = len(reps) - 1
            by_norm[key] = match
        classes.append(by_norm[key])
    return classes


__all__ = ["answers_equivalent", "extract_boxed", "grade", "group_by_equivalence", "normalize"]
