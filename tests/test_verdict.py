"""The demo's verdict (evals.verdict) on a sweep folder of metrics.json files."""

import json

from evals.verdict import main, verdict


def _sweep(tmp_path, accuracies):
    for (strategy, n), acc in accuracies.items():
        d = tmp_path / f"{strategy}-n{n}"
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps(
            {"strategy": strategy, "n": n, "accuracy": acc, "accuracy_ci": [acc - 0.03, min(1.0, acc + 0.03)]}
        ))
    return tmp_path


def test_verdict_checks_the_three_facts_at_the_largest_n(tmp_path, capsys):
    sweep = _sweep(tmp_path, {("greedy", 1): 0.80, ("majority", 4): 0.80, ("majority", 16): 0.86,
                              ("best_of_n", 16): 0.90, ("beam_search", 16): 0.87})
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "n=16" in out and "majority@16 0.860 [0.830, 0.890] vs greedy 0.800" in out
    facts = [line for line in out.splitlines() if line.startswith("- ")]
    assert [line.rsplit(": ", 1)[1] for line in facts] == ["yes", "NO", "yes"]  # +6, +4, +1 points


def test_a_fact_whose_runs_are_missing_is_not_measured(tmp_path):
    sweep = _sweep(tmp_path, {("greedy", 1): 0.8, ("majority", 16): 0.9})
    entries = verdict([json.loads(p.read_text()) for p in sweep.rglob("metrics.json")], 16)
    assert [e["holds"] for e in entries] == [True, None, None]


def test_a_missing_sweep_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "python -m evals.verdict: error:" in capsys.readouterr().err
