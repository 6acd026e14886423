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


def _benchmark(name: str):
    """A script of benchmarks/ as a module (the folder is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_entries_tabulate_their_figures():
    engine = _benchmark("engine_bench")
    body = engine.entry_body(
        "prm",
        {"shipped": {"start_seconds": 34.0, "score_seconds": 18.2}, "compiled": {"start_seconds": 65.0, "score_seconds": 16.1}},
        engine.PRM_VARIANTS,
    )
    assert "| variant | overrides | start_seconds | score_seconds |" in body
    assert "| shipped | (as shipped) | 34.0 | 18.2 |" in body
    assert "| compiled | `prm.vllm.enforce_eager=false` | 65.0 | 16.1 |" in body

    beam = _benchmark("beam_search_bench")
    summary = {"problems": 64, "n": 16, "beam_width": 4, "repeats": 3, "speedup": 2.67,
               **{f"{arm}_{k}": v for arm, vals in (("batched", (7.95, 6.1, 1.5, 0.8)), ("sequential", (21.2, 14.5, 6.6, 0.8)))
                  for k, v in zip(("seconds", "policy_seconds", "prm_seconds", "accuracy"), vals)}}
    body = beam.entry_body(summary, "toy", ["policy.vllm.engine_kwargs.block_size=128"])
    assert "| batched | 7.95 | 6.1 | 1.5 | 0.8 |" in body and "| sequential | 21.2 | 14.5 | 6.6 | 0.8 |" in body
    assert "2.67x" in body and "`policy.vllm.engine_kwargs.block_size=128`" in body

    ttt = _benchmark("ttt_bench")
    figures = {"threads": 1, "hidden_size": 128, "num_layers": 2, "num_heads": 2, "prefill_tokens": 2048,
               "dual_over_primal_speedup": 5.3, "dual_over_primal_speedup_recurrence": 8.1,
               "dual_over_primal_speedup_mlp": 9.9, "dual_over_primal_speedup_recurrence_mlp": 10.5,
               "targets": {"ttt_state_flat": True}}
    for lab, ms in (("1k", (5.2, 9.6)), ("32k", (4.4, 186.0))):
        for kind, t in zip(("ttt", "llama"), ms):
            figures |= {f"{kind}_decode_ms_{lab}": t, f"{kind}_state_bytes_{lab}": 2**20,
                        f"{kind}_decode_rss_growth_mb_{lab}": 0.5}
    body = ttt.entry_body(figures, [1024, 32768])
    assert "TTT-Linear 5.3x / 8.1x; TTT-MLP 9.9x / 10.5x" in body
    assert "| transformer decode ms/token | 9.60 | 186.00 |" in body and "| TTT state MiB | 1.00 | 1.00 |" in body
    assert "ttt_state_flat: True" in body
