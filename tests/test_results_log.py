"""The results log (docs/results/): entries written by the commands that measure."""

from __future__ import annotations

from conftest import compose_app


def test_an_entry_records_command_revision_machine_and_figures(tmp_path, monkeypatch):
    from itc.results_log import write_entry

    monkeypatch.setenv("ITC_RESULTS_LOG", str(tmp_path))
    path = write_entry("Beam search: batched vs sequential", "| arm | s |\n|---|---|\n| batched | 7.9 |",
                       command="python benchmarks/beam_search_bench.py")
    assert path.parent == tmp_path and path.name.endswith("-beam-search-batched-vs-sequential.md")
    text = path.read_text()
    assert text.startswith("# Beam search: batched vs sequential\n")
    assert "- command: `python benchmarks/beam_search_bench.py`" in text
    assert "- revision: " in text and "- machine: " in text and "cores" in text
    assert text.rstrip().endswith("| batched | 7.9 |")
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_itc_eval_prm_entry_carries_the_reports_headline_figures():
    from itc.cli.eval_prm import results_entry

    pb = {"f1": 0.8581, "accuracy_flawed": 0.769, "accuracy_correct": 0.969, "threshold": 0.41}
    report = {
        "prm": "toy", "model": "/cache/prm/toy-prm/checkpoint", "aggregation": "min",
        "toy": {
            "processbench": pb, "step_roc_auc": 0.92, "test_solutions": 3200, "test_problems": 200,
            "best_of_n": {"1": {"best_of_n_min": 0.7, "majority": 0.7, "pass_at_n": 0.7},
                          "16": {"best_of_n_min": 0.88, "majority": 0.755, "pass_at_n": 0.97}},
        },
        "files": {"pb.jsonl": {"processbench": {**pb, "f1": None}, "step_roc_auc": None, "test_solutions": 2}},
    }
    body = results_entry(report, "runs/eval_prm/toy/toy-seed0/report.json")
    assert "| toy (held out) | 0.858 | 0.769 / 0.969 | 0.410 | 0.920 | 3200 |" in body
    assert "| pb.jsonl | n/a | 0.769 / 0.969 | 0.410 | n/a | 2 |" in body
    assert "| N | best_of_n_min | majority | pass_at_n |" in body
    assert "| 16 | 0.880 | 0.755 | 0.970 |" in body


def test_eval_prm_logs_results_unless_turned_off():
    assert compose_app("eval_prm", []).log_results is True
    assert compose_app("eval_prm", ["log_results=false"]).log_results is False
