"""itc-curves: lines per strategy, tables and PNGs from metrics.json files."""

import csv
import json

import pytest

from evals.curves import collect_metrics, series
from itc.cli.curves import main as curves_main


def _write(dirpath, strategy, n, acc, tokens, levels):
    dirpath.mkdir(parents=True)
    (dirpath / "metrics.json").write_text(json.dumps({
        "strategy": strategy, "n": n, "accuracy": acc, "num_problems": 10,
        "accuracy_by_level": levels, "completion_tokens_per_problem": tokens,
        "policy": "toy", "dataset": "toy", "wall_seconds": 1.0,
    }))


def test_curves_from_a_sweep_folder(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _write(sweep / "greedy-n1", "greedy", 1, 0.3, 40, {"1": 0.5, "2": 0.1})
    for n, acc in [(1, 0.25), (4, 0.4), (16, 0.55)]:
        _write(sweep / f"majority-n{n}", "majority", n, acc, 40 * n, {"1": acc + 0.1, "2": acc - 0.1})
    lines = series(collect_metrics([sweep]))
    assert list(lines) == ["greedy", "majority"]
    assert [m["n"] for m in lines["majority"]] == [1, 4, 16]

    curves_main([str(sweep)])
    out = capsys.readouterr().out
    assert "| majority | 16 | 0.550 |" in out
    for name in ("curves.png", "curves_by_level.png", "curves.md", "curves.csv"):
        assert (sweep / name).stat().st_size > 0
    rows = list(csv.DictReader((sweep / "curves.csv").open()))
    assert [(r["strategy"], r["n"], r["accuracy"]) for r in rows][-1] == ("majority", "16", "0.55")
    assert rows[0]["level_2"] == "0.1"


def test_curves_without_metrics_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        curves_main([str(tmp_path)])
    assert e.value.code == 2
    assert "no metrics.json" in capsys.readouterr().err
