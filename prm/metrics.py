"""Step-level PRM metrics: ProcessBench first-error F1 (with a threshold chosen on a separate
split) and step ROC-AUC.

ROC-AUC is the Mann-Whitney rank statistic computed with numpy (ties count one half), a
few lines rather than a scikit-learn dependency for one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def first_error(step_scores: Sequence[float], threshold: float) -> int:
    """Index of the first step scored below ``threshold``, or -1 (ProcessBench's prediction)."""
    return next((i for i, s in enumerate(step_scores) if s < threshold), -1)


def processbench(
    scores: Sequence[Sequence[float]], gold_first_errors: Sequence[int], threshold: float
) -> dict[str, float]:
    """Accuracy on flawed solutions (exact first-error index), on correct ones (no error
    predicted), and F1, their harmonic mean."""
    flawed = correct = flawed_hit = correct_hit = 0
    for s, gold in zip(scores, gold_first_errors):
        pred = first_error(s, threshold)
        if gold < 0:
            correct += 1
            correct_hit += pred < 0
        else:
            flawed += 1
            flawed_hit += pred == gold
    acc_err = flawed_hit / flawed if flawed else float("nan")
    acc_ok = correct_hit / correct if correct else float("nan")
    f1 = 2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err + acc_ok > 0 else 0.0
    return {
        "threshold": threshold,
        "flawed": flawed,
        "correct": correct,
        "accuracy_flawed": acc_err,
        "accuracy_correct": acc_ok,
        "f1": f1,
    }


def best_threshold(
    scores: Sequence[Sequence[float]],
    gold_first_errors: Sequence[int],
    grid: Sequence[float] | None = None,
) -> float:
    """The threshold with the highest F1 on this (calibration) split."""
    grid = grid if grid is not None else [round(float(x), 3) for x in np.linspace(0.02, 0.98, 49)]
    return max(grid, key=lambda t: processbench(scores, gold_first_errors, t)["f1"])


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Probability that a random good step outscores a random bad one (ties count 1/2)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    # Average ranks over ties.
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))
