"""PRM800K (phase 1 and phase 2) records into step-labelled solutions.

Each JSON line is one labelled solution. The loader follows the path the labeler took:

- at a step with a ``human_completion`` the human text is the step (it replaces any chosen
  completion); a human step has no rating in the data and is labelled good (the labeler wrote
  it as the correct continuation), its raw rating stays ``None`` in ``meta["ratings"]``;
- otherwise the ``chosen_completion`` is the step (an unrated chosen completion is likewise
  taken as good: the labeler continued from it);
- the step with neither is where labelling stopped: the path ends there with one completion
  of that step, the one continuing the pre-generated solution when it is rated (phase 2: the
  step the labeler judged, so in a ``found_error`` record the last step is the first wrong
  one, labelled bad), else the lowest-rated one (first among ties). If no completion there is
  rated (e.g. a ``give_up`` where the labeler stopped before rating), the path ends at the
  step before. Steps listed after the stop step are ignored (counted in ``meta``).

Neutral ratings (0) follow ``neutral``: ``"good"`` (default; OpenAI's own scoring and Qwen's
PRM800K baseline), ``"bad"`` (TRL's converter), or ``"drop"``: a neutral step keeps its text
as context but carries no label, so it is merged (joined by a newline) into the next step,
whose label the merged step takes; a trailing neutral step is removed. The policy used is
recorded as ``meta["neutral"]``.

``bad_problem`` records (the labeler flagged the problem itself) are left out unless
``keep_bad_problem=True``, and counted in ``LoadResult.excluded``. With
``include_alternatives=True`` every other rated completion of a step on the path is also
emitted as a branch record: the path's prefix before that step plus the alternative, with
``meta["branch"] = {"step": i, "completion": j}`` (``None`` on the path record).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prm.data.records import LoadResult, StepLabelled, load_records

NEUTRAL_POLICIES = ("good", "bad", "drop")
RATINGS = (-1, 0, 1)


@dataclass
class _Item:
    text: str
    rating: int | None  # raw rating from the file
    value: int  # rating used for the label (unrated chosen/human steps count as +1)
    human: bool = False


def _rating(obj: dict[str, Any], where: str) -> int | None:
    r = obj.get("rating")
    if r is None:
        return None
    if isinstance(r, bool) or r not in RATINGS:
        raise ValueError(f"{where} has rating {r!r}, not -1, 0, 1 or null")
    return int(r)


def _completion(obj: Any, where: str) -> tuple[str, int | None]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not an object")
    if not isinstance(obj.get("text"), str):
        raise ValueError(f"{where} has no 'text' string")
    return obj["text"], _rating(obj, where)


def _apply_neutral(
    items: list[_Item], neutral: str
) -> tuple[list[str], list[float], list[int | None], list[int], int]:
    """Steps, labels, raw ratings, human-step indices and the number of merged steps."""
    steps: list[str] = []
    labels: list[float] = []
    ratings: list[int | None] = []
    human: list[int] = []
    pending: list[str] = []
    for it in items:
        if it.value == 0 and neutral == "drop":
            pending.append(it.text)
            continue
        good = it.value > 0 or (it.value == 0 and neutral == "good")
        steps.append("\n".join([*pending, it.text]))
        labels.append(1.0 if good else 0.0)
        ratings.append(it.rating)
        if it.human:
            human.append(len(steps) - 1)
        pending = []
    return steps, labels, ratings, human, len(items) - len(steps)


def _convert(
    raw: dict[str, Any],
    result: LoadResult,
    file: Path,
    lineno: int,
    neutral: str,
    include_alternatives: bool,
    keep_bad_problem: bool,
) -> list[StepLabelled]:
    question = raw.get("question")
    if not isinstance(question, dict):
        raise ValueError("no 'question' object")
    problem = question.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("'question' has no 'problem' string")
    gold = question.get("ground_truth_answer")
    if gold is not None and not isinstance(gold, str):
        if isinstance(gold, bool) or not isinstance(gold, (int, float)):
            raise ValueError(f"'ground_truth_answer' is {gold!r}, not a string")
        gold = str(gold)
    label = raw.get("label")
    if not isinstance(label, dict):
        raise ValueError("no 'label' object")
    steps = label.get("steps")
    if not isinstance(steps, list):
        raise ValueError("'label' has no 'steps' list")
    finish = label.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise ValueError(f"'finish_reason' is {finish!r}, not a string")
    if finish == "bad_problem" and not keep_bad_problem:
        result.exclude("bad_problem")
        return []
    pre_generated = question.get("pre_generated_steps") or []

    path: list[_Item] = []
    alternatives: list[tuple[int, int, _Item]] = []  # (step, completion index, item)
    ignored = 0
    for i, step in enumerate(steps):
        where = f"step {i}"
        if not isinstance(step, dict):
            raise ValueError(f"{where} is not an object")
        completions_raw = step.get("completions") or []
        if not isinstance(completions_raw, list):
            raise ValueError(f"{where}: 'completions' is not a list")
        completions = [
            _completion(c, f"{where} completion {j}") for j, c in enumerate(completions_raw)
        ]
        chosen = step.get("chosen_completion")
        if chosen is not None and (
            isinstance(chosen, bool)
            or not isinstance(chosen, int)
            or not 0 <= chosen < len(completions)
        ):
            raise ValueError(
                f"{where}: chosen_completion {chosen!r} is not an index into its "
                f"{len(completions)} completion(s)"
            )
        human = step.get("human_completion")
        if human is not None:
            text, rating = _completion(human, f"{where} human_completion")
            pick = _Item(text, rating, 1 if rating is None else rating, human=True)
            picked = None
        elif chosen is not None:
            text, rating = completions[chosen]
            pick = _Item(text, rating, 1 if rating is None else rating)
            picked = chosen
        else:
            rated = [j for j, (_, r) in enumerate(completions) if r is not None]
            if not rated:
                ignored = len(steps) - i - 1
                break
            pre = pre_generated[i] if i < len(pre_generated) else None
            same = [j for j in rated if completions[j][0] == pre]
            picked = same[0] if same else min(rated, key=lambda j: completions[j][1])
            text, rating = completions[picked]
            pick = _Item(text, rating, rating)
        for j, (text, rating) in enumerate(completions):
            if j != picked and rating is not None:
                alternatives.append((i, j, _Item(text, rating, rating)))
        path.append(pick)
        if human is None and chosen is None:
            ignored = len(steps) - i - 1
            break

    base_meta: dict[str, Any] = {
        "phase": 1 if raw.get("generation") is None else 2,
        "generation": raw.get("generation"),
        "finish_reason": finish,
        "labeler": raw.get("labeler"),
        "timestamp": raw.get("timestamp"),
        "is_quality_control_question": raw.get("is_quality_control_question"),
        "is_initial_screening_question": raw.get("is_initial_screening_question"),
        "neutral": neutral,
        "file": file.name,
        "line": lineno,
    }
    if ignored:
        base_meta["steps_after_stop"] = ignored

    def make(items: list[_Item], branch: dict[str, int] | None) -> StepLabelled | None:
        texts, labels, ratings, human_steps, merged = _apply_neutral(items, neutral)
        if not texts:
            return None
        meta = {**base_meta, "ratings": ratings, "human_steps": human_steps, "branch": branch}
        if neutral == "drop":
            meta["merged_neutral"] = merged
        return StepLabelled(problem, texts, labels, gold, "prm800k", meta)

    out: list[StepLabelled] = []
    main = make(path, None)
    if main is None:
        result.exclude("no_labelled_steps")
        return []
    out.append(main)
    if include_alternatives:
        for i, j, alt in alternatives:
            if alt.value == 0 and neutral == "drop":
                continue
            rec = make([*path[:i], alt], {"step": i, "completion": j})
            if rec is not None:
                out.append(rec)
    return out


def load_prm800k(
    path: str | Path,
    neutral: str = "good",
    skip_bad: bool = False,
    include_alternatives: bool = False,
    keep_bad_problem: bool = False,
) -> LoadResult:
    """PRM800K JSONL (a file or a folder of them) as step-labelled records.

    One record per labelled solution (its path), plus one per alternative rated completion
    when ``include_alternatives``. A malformed record raises :class:`PRMDataError`
    (``file:line: reason``); with ``skip_bad`` it is counted in the result instead.
    """
    if neutral not in NEUTRAL_POLICIES:
        raise ValueError(f"neutral={neutral!r} is not one of {', '.join(NEUTRAL_POLICIES)}")
    return load_records(
        path,
        lambda raw, res, file, lineno: _convert(
            raw, res, file, lineno, neutral, include_alternatives, keep_bad_problem
        ),
        skip_bad,
    )
