"""How good is a PRM: step-level (ProcessBench F1, step ROC-AUC) and as a selector of
best-of-N solutions beside majority vote over the same samples ("Let's Verify Step by Step")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from itc.grading import answers_equivalent
from itc.policy import Policy
from itc.types import Candidate, Problem
from prm.data import StepLabelled
from prm.evaluation import step_report
from prm.scoring import AGGREGATIONS, PRM, aggregate
from itc.candidates import majority_choice, sample_candidates


def select_best(cands: Sequence[Candidate], how: str) -> int | None:
    """The highest-scoring candidate that has an answer (aggregating its step scores)."""
    scored = [
        (aggregate(c.step_scores, how), i)
        for i, c in enumerate(cands)
        if c.answer is not None and c.step_scores
    ]
    return max(scored)[1] if scored else None


def best_of_n_report(
    problems: Sequence[Problem], candidates: Sequence[Sequence[Candidate]], ns: Sequence[int]
) -> dict[str, Any]:
    """Accuracy at each N (the first N samples of each problem; samples are i.i.d., so a
    prefix is a valid draw of N) for: PRM best-of-N under each aggregation, PRM-weighted
    majority (scores summed per answer), majority vote, and pass@N (any sample right)."""
    correct = [
        [answers_equivalent(c.answer, p.answer) for c in cands]
        for p, cands in zip(problems, candidates)
    ]
    out: dict[str, Any] = {}
    for n in ns:
        row: dict[str, float] = {}
        pick = {f"best_of_n_{how}": (lambda cs, how=how: select_best(cs, how)) for how in AGGREGATIONS}
        pick["weighted_majority_min"] = lambda cs: majority_choice(
            cs, [aggregate(c.step_scores, "min") if c.step_scores else 0.0 for c in cs]
        )
        pick["majority"] = lambda cs: majority_choice(cs)
        for name, choose in pick.items():
            hits = 0
            for cands, ok in zip(candidates, correct):
                chosen = choose(list(cands[:n]))
                hits += chosen is not None and ok[chosen]
            row[name] = hits / len(problems)
        row["pass_at_n"] = sum(any(ok[:n]) for ok in correct) / len(problems)
        out[str(n)] = row
    return out


def toy_report(
    policy: Policy,
    prm: PRM,
    num_problems: int,
    calibration_problems: int,
    samples_per_problem: int,
    calibration_samples: int,
    ns: Sequence[int],
    levels: Sequence[int],
    seed: int,
) -> dict[str, Any]:
    """The PRM on held-out embedded-world problems: calibration problems pick the threshold,
    disjoint test problems give F1, ROC-AUC and best-of-N."""
    from itc.toy import generate
    from prm.data.toy import gold_records

    problems = [
        p.to_problem()
        for p in generate(calibration_problems + num_problems, seed, tuple(levels), "test")
    ]
    cal_problems, test_problems = problems[:calibration_problems], problems[calibration_problems:]
    cal_cands = sample_candidates(policy, cal_problems, calibration_samples)
    test_cands = sample_candidates(policy, test_problems, samples_per_problem)
    # The solutions as the policy wrote them (unfinished ones included), with gold labels.
    cal_records = gold_records(cal_problems, [[c.text for c in cs] for cs in cal_cands])
    test_records = gold_records(test_problems, [[c.text for c in cs] for cs in test_cands])
    report = step_report(prm, cal_records, test_records)
    prm.score_candidates([p.problem for p in test_problems], test_cands)
    report["best_of_n"] = best_of_n_report(test_problems, test_cands, [n for n in ns if n <= samples_per_problem])
    report["test_problems"] = len(test_problems)
    report["samples_per_problem"] = samples_per_problem
    return report


def file_report(prm: PRM, records: Sequence[StepLabelled]) -> dict[str, Any]:
    """Step-level report on a labelled file: even-indexed records calibrate, odd ones test."""
    if len(records) < 2:
        raise ValueError("a PRM evaluation file needs at least 2 records (calibration + test)")
    return step_report(prm, records[0::2], records[1::2])


def clean(obj: Any) -> Any:
    """NaN -> None, so the report is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [clean(v) for v in obj]
    return obj
