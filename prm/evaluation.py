"""Step-level evaluation of a PRM on labelled solutions: ProcessBench F1 at a threshold chosen
on a calibration split, and step ROC-AUC; and the embedded world's quick check that needs no
policy (the toy PRM's quality gate, :mod:`prm.training.pipeline`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prm.data import StepLabelled
from prm.metrics import best_threshold, processbench, roc_auc
from prm.scoring import PRM


def _first_errors(records: Sequence[StepLabelled]) -> list[int]:
    return [r.first_error() for r in records]


def score_records(prm: PRM, records: Sequence[StepLabelled]) -> list[list[float]]:
    """Per-step scores of each record (one batched call)."""
    scores = prm.score([r.problem for r in records], [[r.steps] for r in records])
    return [s[0] for s in scores]


def step_report(
    prm: PRM, calibration: Sequence[StepLabelled], test: Sequence[StepLabelled]
) -> dict[str, Any]:
    """ProcessBench F1 on ``test`` at the threshold that maximises F1 on ``calibration``
    (and at 0.5), and the ROC-AUC of step scores against step labels on ``test``."""
    cal_scores, test_scores = score_records(prm, calibration), score_records(prm, test)
    threshold = best_threshold(cal_scores, _first_errors(calibration))
    flat_scores = [x for s in test_scores for x in s]
    flat_labels = [y >= 0.5 for r in test for y in r.labels]
    return {
        "calibration_solutions": len(calibration),
        "test_solutions": len(test),
        "test_steps": len(flat_scores),
        "processbench": processbench(test_scores, _first_errors(test), threshold),
        "processbench_at_0.5": processbench(test_scores, _first_errors(test), 0.5),
        "step_roc_auc": roc_auc(flat_scores, flat_labels),
    }


def toy_gate_report(
    prm: PRM, num_problems: int = 100, seed: int = 11, long_chain_steps: int | None = None
) -> dict[str, Any]:
    """A quick check of a PRM on the embedded world, with no policy to sample: held-out
    problems' reference solutions (no error) and the same solutions with one step made wrong
    and cut there (prm.data.toy.corrupted_records); the first ``num_problems`` calibrate the
    threshold, the next ``num_problems`` give ProcessBench F1 (:func:`step_report`).
    ``long_chain_steps``: long-chain problems of that many operations instead of the levels."""
    from itc.toy import generate
    from prm.data.toy import corrupted_records

    if long_chain_steps:
        problems = generate(2 * num_problems, seed, levels=(1,), split="test", long_chain_steps=long_chain_steps)
    else:
        problems = generate(2 * num_problems, seed, split="test")
    records: list[StepLabelled] = []
    for p, flawed in zip(problems, corrupted_records(problems, 1, seed=seed)):
        steps = p.reference_steps()
        records += [
            StepLabelled(problem=p.text, steps=steps, labels=[1.0] * len(steps), gold_answer=str(p.answer), source="toy"),
            flawed,
        ]
    return step_report(prm, records[: 2 * num_problems], records[2 * num_problems :])
