"""evals.frontier: the 2-fold split never lets a problem both choose a setting and score it."""

import json

import numpy as np
import pytest

from evals.frontier import Setting, compute_frontier, two_fold_split


def _settings(ids, halves, cost_a=1.0, cost_b=1.0):
    """Two settings of equal budget: a is right on the first half only, b on the second only."""
    first = np.zeros(len(ids))
    first[halves[0]] = 1.0
    return [
        Setting("a", 1, first.copy(), np.full(len(ids), cost_a)),
        Setting("b", 1, 1.0 - first, np.full(len(ids), cost_b)),
    ]


def test_split_halves_are_disjoint_cover_every_problem_and_every_bin():
    bins = np.array(["1"] * 7 + ["2"] * 10 + ["3"] * 3)
    a, b = two_fold_split(bins, seed=3)
    assert not set(a) & set(b) and sorted([*a, *b]) == list(range(20))
    for k in ("1", "2", "3"):  # each bin split about evenly
        na, nb = (bins[a] == k).sum(), (bins[b] == k).sum()
        assert abs(na - nb) <= 1
    assert [x.tolist() for x in two_fold_split(bins, seed=3)] == [a.tolist(), b.tolist()]


def test_frontier_never_chooses_and_scores_on_the_same_problem():
    ids = [f"p{i}" for i in range(40)]
    bins = np.array(["easy", "hard"] * 20)
    halves = two_fold_split(bins)
    # a setting that is right exactly where it is chosen and wrong where it is scored: a
    # frontier that looked at the scored problems would score 1.0; a leak-free one scores 0
    f = compute_frontier(ids, _settings(ids, halves), bins)
    (point,) = f.points
    assert point["accuracy"] == 0.0
    assert point["gain"]["diff"] == -0.5  # against the better fixed setting (0.5), in hindsight
    for c in f.choices:
        assert not set(c["chosen_on"]) & set(c["scored_on"])
    scored = [i for c in f.choices for i in c["scored_on"]]
    assert sorted(scored) == sorted(ids)  # every problem scored exactly once
    assert {c["setting"] for c in f.choices if c["fold"] == 0} == {"a N=1"}  # chosen on half 0
    json.dumps(f.choices)


def test_frontier_respects_the_budget_and_reports_the_reach():
    ids = [f"p{i}" for i in range(60)]
    bins = np.array(["easy"] * 30 + ["hard"] * 30)
    hard = bins == "hard"
    cheap = Setting("cheap", 1, (~hard).astype(float), np.full(60, 1.0))  # right on easy only
    dear = Setting("dear", 4, np.ones(60), np.full(60, 10.0))  # right everywhere
    mid = Setting("mid", 2, np.where(hard, 1.0, 0.0), np.full(60, 3.0))  # right on hard only
    f = compute_frontier(ids, [cheap, dear, mid], bins)
    by_budget = {p["budget"]: p for p in f.points}
    assert by_budget[1.0]["accuracy"] == pytest.approx(0.5)  # only the cheap one fits
    # at budget 3: cheap for easy problems, mid for hard ones: every problem right, at cost 2
    assert by_budget[3.0]["accuracy"] == 1.0 and by_budget[3.0]["cost"] == pytest.approx(2.0)
    s = f.summary
    assert s["best_fixed"] == "dear N=4" and s["best_fixed_accuracy"] == 1.0
    assert s["reach_budget"] == pytest.approx(2.0) and s["compute_ratio"] == pytest.approx(5.0)
    lo, hi = s["reach_budget_ci"]  # the realized cost moves with the resampled easy/hard mix
    assert 1.0 < lo <= 2.0 <= hi < 3.0 and s["reached_share"] == 1.0
