"""Grading: extract the final answer and compare it with the reference by math-verify."""

from __future__ import annotations

from collections.abc import Sequence

from itc.grading.answers import extract_boxed, normalize
from itc.grading.verify import DEFAULT_BUDGET_S, DEFAULT_TIMEOUT_S, GradingBudget, answers_equivalent

# Set (in a candidate's meta, and on a result record) when a problem's grading budget ran
# out and some of its answers were compared by canonical string only.
EXACT_STRING_FALLBACK = "graded_by_exact_string"


def grade(prediction: str, gold: str, timeout: int = DEFAULT_TIMEOUT_S) -> bool:
    """True when the last ``\\boxed{}`` of the solution text ``prediction`` equals ``gold``.

    ``gold`` is a reference answer in LaTeX (with or without surrounding ``$``).
    """
    answer = extract_boxed(prediction)
    return answers_equivalent(answer, gold.strip().strip("$"), timeout)


def group_by_equivalence(
    answers: Sequence[str | None],
    timeout: int = DEFAULT_TIMEOUT_S,
    budget: GradingBudget | None = None,
) -> list[int | None]:
    """A class index per answer, equal for equivalent answers (None for no answer).

    Answers with the same canonical string share a class without math-verify; any other
    answer is compared with one representative per existing class, so equivalent forms
    ("0.5", "\\frac12") fall into one vote. The comparisons are bounded by ``budget`` (a new
    :class:`GradingBudget` of 30 s when None): past it, an answer joins only a class of
    the same canonical string, and ``budget.exhausted`` says so. An answer on which
    math-verify once ran out of time stands alone.
    """
    budget = budget or GradingBudget(timeout=timeout)
    reps: list[str] = []
    by_norm: dict[str, int] = {}
    classes: list[int | None] = []
    for ans in answers:
        if ans is None:
            classes.append(None)
            continue
        key = normalize(ans)
        if key not in by_norm:
            match = next((i for i, rep in enumerate(reps) if budget.equivalent(ans, rep)), None)
            if match is None:
                reps.append(ans)
                match = len(reps) - 1
            by_norm[key] = match
        classes.append(by_norm[key])
    return classes


__all__ = ["DEFAULT_BUDGET_S", "EXACT_STRING_FALLBACK", "GradingBudget", "answers_equivalent", "extract_boxed", "grade", "group_by_equivalence", "normalize"]
