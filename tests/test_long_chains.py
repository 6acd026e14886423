"""`python -m evals.long_chains --quick`: both policies train, are cached, and the report has
every figure for every chain length, N and model, each a fraction in [0, 1]."""

from __future__ import annotations

import json
from pathlib import Path

from evals import long_chains


def _fractions(report: dict) -> list[float]:
    out = []
    for rows in report["by_length"].values():
        for row in rows.values():
            out += [row[key] for key in long_chains.STEP_METRICS]
    bon = report["best_of_n"]
    return [*out, *bon["majority"].values(), *bon["pass"].values(), bon["sample_steps"]]


def test_grade_counts_steps_from_the_solutions_own_values():
    p = long_chains.task.generate(1, seed=0, levels=(1,), long_chain_steps=8)[0]
    assert long_chains.grade(p, p.solution) == dict.fromkeys(long_chains.STEP_METRICS, 1.0)
    steps = p.reference_steps()
    head, _, equation = steps[1].partition(" ")
    lhs, result = equation.split("=")
    steps[1] = f"{head} {lhs}={int(result) + 1}"  # one arithmetic slip; the rest as reference
    g = long_chains.grade(p, "\n\n".join(steps))
    assert g["accuracy"] == 1.0 and g["ops"] == 1.0
    assert g["on_track"] == 1 / 9  # only step A before the first error
    assert g["arithmetic"] == 7 / 8
    assert g["steps"] == 6 / 8  # B is wrong, and C does not follow from B's written value


def test_quick_report(tmp_path, monkeypatch, capsys, one_torch_thread):
    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "report.json"
    argv = ["--quick", "--steps", "2", "--problems", "2", "--bon-problems", "2"]
    argv += ["--out", str(out)]
    report = long_chains.main(argv)

    printed = capsys.readouterr().out.strip().splitlines()
    assert json.loads(printed[-1]) == json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert set(report["models"]) == set(report["by_length"]) == {"ttt", "gpt2"}
    for arch, m in report["models"].items():
        assert m["parameters"] > 0 and m["train_seconds"] >= 0
        path = Path(m["path"])
        assert path.parent == tmp_path / "cache" / "toy"
        assert path.name.startswith(f"long-chain-{arch}-")
        assert (path / "build_info.json").exists()
        rows = report["by_length"][arch]
        assert list(rows) == ["8", "16", "32", "64"]
        for row in rows.values():
            assert set(long_chains.STEP_METRICS) <= set(row)
            assert row["problems"] == 2 and row["mean_tokens"] > 0
            for key in long_chains.STEP_METRICS:  # 95% intervals around every figure
                lo, hi = row[f"{key}_ci"]
                assert 0 <= lo <= row[key] <= hi <= 1
            assert 0 < row["chance"] <= 1 and isinstance(row["above_chance"], bool)
        # teacher-forced loss against position on the longest chains, for both models
        curve = report["loss_by_position"][arch]
        assert len(curve) >= 2 and all(x > 0 for x in curve)
    # The TTT model's SwiGLU width is chosen to match GPT-2's parameter count.
    ttt, gpt2 = report["models"]["ttt"]["parameters"], report["models"]["gpt2"]["parameters"]
    assert abs(ttt - gpt2) / gpt2 < 0.05
    bon = report["best_of_n"]
    assert bon["problems"] == 2 and list(bon["majority"]) == list(bon["pass"]) == ["1", "4"]
    assert all(0.0 <= x <= 1.0 for x in _fractions(report))
    # pass@N never falls with N and bounds majority vote.
    assert bon["pass"]["1"] <= bon["pass"]["4"]
    assert all(bon["majority"][n] <= bon["pass"][n] for n in bon["majority"])

    # A second run loads both cached models instead of training them again.
    again = long_chains.main(argv)
    assert {a: m["path"] for a, m in again["models"].items()} == {
        a: m["path"] for a, m in report["models"].items()
    }
    assert again["by_length"] == report["by_length"]
