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


def test_subsampling_one_best_of_n_run_gives_the_smaller_n(tmp_path, capsys):
    from evals.subsample import subsampled_metrics

    run = tmp_path / "sweep" / "best_of_n-n4"
    run.mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"strategy": {"selection": "highest", "aggregation": "min"}}))
    cands = [  # (answer, correct, step scores): the best-scoring sample is right only from k=2 on
        ("3", False, [0.4]), ("5", True, [0.9]), ("3", False, [0.2]), ("3", False, [0.1]),
    ]
    record = {
        "problem_id": "p", "level": 1, "correct": True, "prompt_tokens": 10, "completion_tokens": 40,
        "prm_tokens": 80, "policy_flops": 100.0, "prm_flops": 160.0, "wall_seconds": 4.0,
        "candidates": [
            {"text": "", "steps": ["s"], "answer": a, "completion_tokens": 10, "finished": True,
             "step_scores": s, "score": None, "correct": ok, "meta": {}}
            for a, ok, s in cands
        ],
    }
    (run / "results.jsonl").write_text(json.dumps(record) + "\n")
    metrics = {"strategy": "best_of_n", "n": 4, "accuracy": 1.0, "num_problems": 1, "policy": "toy",
               "dataset": "toy", "completion_tokens_per_problem": 40, "accuracy_by_level": {"1": 1.0}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    subs = subsampled_metrics({**metrics, "run_dir": str(run)})
    assert [(m["n"], m["accuracy"], m["completion_tokens"], m["prm_tokens"]) for m in subs] == [
        (1, 0.0, 10, 20), (2, 1.0, 20, 40)
    ]
    assert subsampled_metrics({**metrics, "strategy": "beam_search", "run_dir": str(run)}) == []

    curves_main([str(tmp_path / "sweep"), "--subsample"])
    out = capsys.readouterr().out
    # one problem: each point's interval is the point itself
    assert "| best_of_n | 1 | 0.000 [0.000, 0.000] |" in out and "| best_of_n | 4 | 1.000 [1.000, 1.000] |" in out


def _run(dirpath, strategy, n, prm, records, aggregation="min", selection="weighted_majority/min", **strategy_cfg):
    """A run folder as itc-run writes it: run_config.json, results.jsonl, metrics.json."""
    from itc.results import summarize

    dirpath.mkdir(parents=True)
    config = {"policy": {"name": "toy"}, "dataset": {"name": "toy"}, "seed": 0,
              "strategy": {"name": strategy, "n": n, **strategy_cfg},
              "prm": None if prm is None else {"name": prm, "model": prm, "aggregation": aggregation}}
    (dirpath / "run_config.json").write_text(json.dumps(config))
    (dirpath / "results.jsonl").write_text("".join(json.dumps({**r, "selection": selection}) + "\n" for r in records))
    metrics = summarize([{**r, "selection": selection} for r in records], strategy=strategy, n=n, policy="toy", dataset="toy", prm=prm, seed=0)
    (dirpath / "metrics.json").write_text(json.dumps(metrics))


def _record(cands, correct, by_selection=None):
    """cands: (answer, correct, step scores)."""
    rec = {
        "problem_id": "p", "level": 1, "correct": correct, "prompt_tokens": 10, "completion_tokens": 40,
        "prm_tokens": 8, "wall_seconds": 1.0,
        "candidates": [{"text": "", "steps": ["s"] * len(s or [1]), "answer": a, "completion_tokens": 10, "finished": True,
                        "step_scores": s, "score": None, "correct": ok, "meta": {}} for a, ok, s in cands],
    }
    if by_selection is not None:
        rec["correct_by_selection"] = by_selection
    return rec


CANDS = [("3", False, [0.9, 0.2]), ("5", True, [0.6]), ("3", False, [0.5])]  # highest/last: "5"; majority: "3"


def test_lines_are_labelled_by_what_differs_between_the_runs(tmp_path, capsys):
    from evals.curves import labels

    sweep = tmp_path / "cmp"
    _run(sweep / "a", "best_of_n", 4, "toy", [_record(CANDS, False)])
    _run(sweep / "b", "best_of_n", 4, "toy-orm", [_record(CANDS, True)], aggregation="last")
    _run(sweep / "c", "beam_search", 4, "toy", [_record(CANDS, True)], beam_width=2)
    _run(sweep / "d", "beam_search", 4, "toy", [_record(CANDS, True)], beam_width=4)
    metrics = collect_metrics([sweep])
    assert labels(metrics) == [
        "best_of_n prm=toy", "best_of_n prm=toy-orm", "beam_search prm=toy beam_width=2", "beam_search prm=toy beam_width=4"
    ]  # the PRM's aggregation follows from its name, and is not repeated
    assert len(series(metrics)) == 4
    curves_main([str(sweep)])
    out = capsys.readouterr().out
    assert "| best_of_n prm=toy | 4 | 0.000 [0.000, 0.000] |" in out and "| best_of_n prm=toy-orm | 4 | 1.000 [1.000, 1.000] |" in out


def test_curves_draw_every_run_under_one_selection_rule_and_log_the_table(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "demo"
    # recorded by itc-run: every rule per record
    _run(sweep / "bon", "best_of_n", 3, "toy", [_record(CANDS, False, {"majority": False, "highest/last": True})])
    # recorded before the rules were: chosen again from the candidates' scores
    _run(sweep / "beam", "beam_search", 3, "toy", [_record(CANDS, True)], selection="highest/last")
    unscored = _record([(a, ok, None) for a, ok, _ in CANDS], False)
    _run(sweep / "maj", "majority", 3, None, [unscored], selection="majority")
    log = tmp_path / "log"
    monkeypatch.setenv("ITC_RESULTS_LOG", str(log))
    curves_main([str(sweep), "--selection", "highest/last", "--log", "demo under one rule"])
    captured = capsys.readouterr()
    # no majority run can be drawn under highest/last: no difference column to fill
    assert "| best_of_n | 3 | 1.000 [1.000, 1.000] |  | 1 |  | highest/last |" in captured.out
    assert "| beam_search | 3 | 1.000 [1.000, 1.000] |  | 1 |  | highest/last |" in captured.out
    (entry,) = log.glob("*.md")
    text = entry.read_text()
    assert "Selection: highest/last" in text and "itc-curves" in text and "| best_of_n |" in text
    assert "maj" in captured.err and "left out" in captured.err  # no PRM scores for that rule
    curves_main([str(sweep), "--selection", "majority"])
    out = capsys.readouterr().out
    assert "| best_of_n | 3 | 0.000 [0.000, 0.000] | 0.000 [0.000, 0.000] | 1 |  | majority |" in out
    assert "| majority | 3 | 0.000 [0.000, 0.000] |  | 1 |  | majority |" in out
    with pytest.raises(SystemExit) as e:
        curves_main([str(sweep), "--selection", "best"])
    assert e.value.code == 2


def _seeded_run(dirpath, strategy, n, correct, seed=0, flops=100.0):
    """A run over problems p0..p39 (levels 1 and 2): ``correct`` per problem."""
    from itc.results import summarize

    records = [
        {"problem_id": f"p{i}", "level": 1 + i % 2, "correct": bool(ok), "selection": "majority",
         "prompt_tokens": 10, "completion_tokens": 10 * n, "prm_tokens": 0, "policy_flops": flops * n,
         "prm_flops": 0.0, "wall_seconds": 1.0,
         "candidates": [{"text": "", "steps": ["s"], "answer": "1" if ok else "2", "completion_tokens": 10,
                         "finished": True, "step_scores": None, "score": None, "correct": bool(ok), "meta": {}}] * n}
        for i, ok in enumerate(correct)
    ]
    dirpath.mkdir(parents=True)
    config = {"policy": {"name": "toy"}, "dataset": {"name": "toy"}, "seed": seed,
              "strategy": {"name": strategy, "n": n}, "prm": None}
    (dirpath / "run_config.json").write_text(json.dumps(config))
    (dirpath / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    metrics = summarize(records, strategy=strategy, n=n, policy="toy", dataset="toy", prm=None, seed=seed)
    (dirpath / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def test_intervals_pooled_seeds_paired_differences_frontier_and_report(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    half = [i < 20 for i in range(40)]
    m0 = _seeded_run(sweep / "maj-4-s0", "majority", 4, half, seed=0)
    _seeded_run(sweep / "maj-4-s1", "majority", 4, [i < 24 for i in range(40)], seed=1)
    _seeded_run(sweep / "maj-1", "majority", 1, half)
    _seeded_run(sweep / "bon-4", "best_of_n", 4, [True] * 40)
    assert m0["accuracy_ci"][0] < 0.5 < m0["accuracy_ci"][1] and set(m0["accuracy_by_level_ci"]) == {"1", "2"}

    curves_main([str(sweep), "--frontier", "level,pass_rate"])
    out = capsys.readouterr().out
    rows = {(r["strategy"], r["n"]): r for r in csv.DictReader((sweep / "curves.csv").open())}
    pooled = rows[("majority", "4")]  # two seeds, one point: the mean, with the seeds' spread
    assert pooled["seeds"] == "2" and float(pooled["accuracy"]) == pytest.approx(0.55)
    assert float(pooled["seed_sd"]) == pytest.approx(0.0707, abs=1e-4)
    assert float(pooled["accuracy_low"]) < 0.55 < float(pooled["accuracy_high"])
    bon = rows[("best_of_n", "4")]  # paired against majority at N=4 (pooled): +0.45, excludes 0
    assert float(bon["vs_majority"]) == pytest.approx(0.45) and bon["vs_majority_excludes_0"] == "True"
    assert "| best_of_n | 4 | 1.000 [1.000, 1.000] | 0.450 [" in out and "] * |" in out

    report = (sweep / "report.md").read_text()
    assert "![curves](curves.png)" in report and "![curves_by_level](curves_by_level.png)" in report
    assert "best_of_n at N=4 is more accurate than majority at N=4: +0.450" in report
    assert "Repeated seeds are pooled" in report and "## Compute-optimal frontier" in report
    assert "![frontier by level](frontier_level.png)" in report and "bins by pass_rate" in report
    for name in ("frontier_level.png", "frontier_pass_rate.png", "frontier.json"):
        assert (sweep / name).stat().st_size > 0
    (level, _) = json.loads((sweep / "frontier.json").read_text())
    for c in level["choices"]:
        assert not set(c["chosen_on"]) & set(c["scored_on"])

    for bad in (["--frontier", "levels"], ["--budget", "joules"]):
        with pytest.raises(SystemExit) as e:
            curves_main([str(sweep), *bad])
        assert e.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # no run with PRM scores on its samples
        curves_main([str(sweep), "--frontier", "prm_score"])
    assert e.value.code == 2 and "itc-curves: error: --frontier: binning by prm_score needs" in capsys.readouterr().err


def test_curves_read_a_run_still_writing_without_rewriting_it(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _seeded_run(sweep / "maj-1", "majority", 1, [True] * 40)
    _seeded_run(sweep / "maj-4", "majority", 4, [i % 2 == 0 for i in range(40)])
    results = sweep / "maj-4" / "results.jsonl"
    with results.open("a") as f:  # a line being written
        f.write('{"problem_id": "p40", "cor')
    before = results.read_bytes()
    curves_main([str(sweep)])
    assert results.read_bytes() == before
    rows = {r["n"]: r for r in csv.DictReader((sweep / "curves.csv").open())}
    assert float(rows["4"]["accuracy_low"]) < 0.5 < float(rows["4"]["accuracy_high"])
