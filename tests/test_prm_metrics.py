"""prm.metrics: ProcessBench first-error F1, its threshold choice, and step ROC-AUC."""

import math

import pytest

from prm.metrics import best_threshold, first_error, processbench, roc_auc


def test_processbench_f1_and_threshold_choice():
    scores = [[0.9, 0.2, 0.1], [0.9, 0.8], [0.4, 0.9], [0.9, 0.9, 0.9]]
    gold = [1, -1, 0, 2]
    assert first_error(scores[0], 0.5) == 1 and first_error(scores[1], 0.5) == -1
    r = processbench(scores, gold, 0.5)
    assert (r["flawed"], r["correct"]) == (3, 1)
    assert r["accuracy_flawed"] == pytest.approx(2 / 3) and r["accuracy_correct"] == 1.0
    assert r["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert processbench(scores, gold, 0.95)["accuracy_correct"] == 0.0
    assert best_threshold(scores, gold, [0.3, 0.5, 0.95]) == 0.5


def test_roc_auc():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert roc_auc([0.3, 0.1, 0.4, 0.35], [False, True, True, False]) == pytest.approx(0.5)
    assert math.isnan(roc_auc([0.2], [True]))
