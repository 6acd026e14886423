"""PRM data: PRM800K, Math-Shepherd, ProcessBench, the step-labelled JSONL, the TRL export, and the training mix."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from itc.toy import generate
from prm.data import (
    LoadResult,
    PRMDataError,
    StepLabelled,
    export_trl,
    load_math_shepherd,
    load_processbench,
    load_prm800k,
    parse_math_shepherd,
    read_jsonl,
    to_trl,
    write_jsonl,
)

FIX = Path(__file__).parent / "fixtures" / "prm"
PRM_SMALL = FIX / "prm800k_small.jsonl"
PRM_BAD = FIX / "prm800k_bad.jsonl"
MS_SMALL = FIX / "math_shepherd_small.jsonl"
MS_BAD = FIX / "math_shepherd_bad.jsonl"
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data is not present")


def by_line(result: LoadResult, branches: bool = False) -> dict[int, StepLabelled]:
    return {r.meta["line"]: r for r in result if branches or r.meta["branch"] is None}


# --- the record type and JSONL ------------------------------------------------------------


def test_step_labelled_round_trip_and_validation():
    rec = StepLabelled("Q?", ["a", "b"], [1, 0.25], "3", "auto", {"k": 1})
    assert rec.labels == [1.0, 0.25] and all(isinstance(x, float) for x in rec.labels)
    assert StepLabelled.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    assert rec.first_error() == 1
    assert StepLabelled("Q", ["a"], [1.0]).first_error() == -1
    with pytest.raises(ValueError, match="2 steps but 1 labels"):
        StepLabelled("Q", ["a", "b"], [1.0])
    with pytest.raises(ValueError, match="outside"):
        StepLabelled("Q", ["a"], [-1.0])
    with pytest.raises(ValueError, match="not a number"):
        StepLabelled("Q", ["a"], [True])
    with pytest.raises(ValueError, match="source"):
        StepLabelled("Q", ["a"], [1.0], source="elsewhere")
    with pytest.raises(ValueError, match="at least one step"):
        StepLabelled("Q", [], [])
    with pytest.raises(ValueError, match="missing field"):
        StepLabelled.from_dict({"problem": "Q", "steps": ["a"]})


def test_write_and_read_jsonl(tmp_path):
    recs = list(load_prm800k(PRM_SMALL)) + list(load_math_shepherd(MS_SMALL))
    out = tmp_path / "sub" / "labelled.jsonl"
    out.parent.mkdir()
    out.write_text("old contents\n")
    assert write_jsonl(recs, out) == len(recs)
    assert [p.name for p in out.parent.iterdir()] == ["labelled.jsonl"]  # no temp file left
    back = read_jsonl(out)
    assert back.records == recs and back.skipped == 0


def test_read_jsonl_names_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    good = StepLabelled("Q", ["a"], [1.0]).to_dict()
    path.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "labels": [1.0, 0.0]}) + "\n"
    )
    with pytest.raises(PRMDataError, match=r"x\.jsonl:2: 1 steps but 2 labels"):
        read_jsonl(path)
    res = read_jsonl(path, skip_bad=True)
    assert len(res) == 1 and res.skipped == 1


def test_missing_path():
    with pytest.raises(FileNotFoundError):
        load_prm800k(FIX / "nope.jsonl")


# --- PRM800K --------------------------------------------------------------------------------


def test_prm800k_paths_default_policy():
    res = load_prm800k(PRM_SMALL)
    assert res.skipped == 0 and res.excluded == {"bad_problem": 1}
    recs = by_line(res)
    assert sorted(recs) == [1, 2, 3, 5, 6] and len(res) == 5

    # phase 2 found_error: the last step is the pre-generated one (completion 1), the first error
    r = recs[1]
    assert r.steps == ["We need 2 + 3.", "Hmm, let me think.", "2 + 3 = 6."]
    assert r.labels == [1.0, 1.0, 0.0] and r.first_error() == 2
    assert r.meta["ratings"] == [1, 0, -1]
    assert r.meta["phase"] == 2 and r.meta["finish_reason"] == "found_error"
    assert r.meta["neutral"] == "good" and r.gold_answer == "5" and r.source == "prm800k"

    # phase 1: a human completion replaces the rated ones, then the chosen completion
    r = recs[2]
    assert r.steps == ["Multiply 4 by 5.", "4 * 5 = 20.", "# Answer\n\n20"]
    assert r.labels == [1.0, 1.0, 1.0]
    assert r.meta["ratings"] == [1, None, 1] and r.meta["human_steps"] == [1]
    assert r.meta["phase"] == 1 and r.meta["generation"] is None

    # give_up whose last step was never rated: the path ends at the step before
    assert recs[3].steps == ["Subtract 1 from both sides."] and recs[3].labels == [1.0]

    # a rated stop step without a pre-generated solution: the lowest-rated, first of ties
    assert recs[6].steps[-1] == "So it is 6." and recs[6].labels == [1.0, 0.0]


@pytest.mark.parametrize(
    ("neutral", "labels_1", "steps_5", "labels_5"),
    [
        ("good", [1.0, 1.0, 0.0], 3, [1.0, 1.0, 1.0]),
        ("bad", [1.0, 0.0, 0.0], 3, [1.0, 0.0, 1.0]),
        ("drop", [1.0, 0.0], 2, [1.0, 1.0]),
    ],
)
def test_prm800k_neutral_policies(neutral, labels_1, steps_5, labels_5):
    recs = by_line(load_prm800k(PRM_SMALL, neutral=neutral))
    assert recs[1].labels == labels_1
    assert len(recs[5].steps) == steps_5 and recs[5].labels == labels_5
    assert all(r.meta["neutral"] == neutral for r in recs.values())


def test_prm800k_drop_merges_neutral_into_next_step():
    recs = by_line(load_prm800k(PRM_SMALL, neutral="drop"))
    assert recs[1].steps == ["We need 2 + 3.", "Hmm, let me think.\n2 + 3 = 6."]
    assert recs[1].meta["ratings"] == [1, -1] and recs[1].meta["merged_neutral"] == 1
    assert recs[5].steps == ["Compute 10 - 4.", "That is a subtraction.\n# Answer\n\n6"]


def test_prm800k_bad_problem_kept_on_request():
    res = load_prm800k(PRM_SMALL, keep_bad_problem=True)
    assert res.excluded == {} and by_line(res)[4].meta["finish_reason"] == "bad_problem"
    # its only step is neutral: dropped, nothing labelled is left
    res = load_prm800k(PRM_SMALL, keep_bad_problem=True, neutral="drop")
    assert res.excluded == {"no_labelled_steps": 1} and 4 not in by_line(res)


def test_prm800k_alternatives():
    res = load_prm800k(PRM_SMALL, include_alternatives=True)
    branches = [r for r in res if r.meta["branch"] is not None]
    got = {(r.meta["line"], *r.meta["branch"].values()) for r in branches}
    assert got == {(1, 2, 0), (1, 2, 2), (2, 1, 0), (2, 1, 1), (2, 2, 0), (6, 1, 0), (6, 1, 2)}
    alt = next(r for r in branches if r.meta["line"] == 2 and r.meta["branch"]["step"] == 2)
    # the prefix follows the labelled path (the human step), then the alternative
    assert alt.steps == ["Multiply 4 by 5.", "4 * 5 = 20.", "# Answer\n\n21"]
    assert alt.labels == [1.0, 1.0, 0.0]
    alt = next(r for r in branches if r.meta["branch"] == {"step": 2, "completion": 2})
    assert alt.steps[-1] == "2 + 3 = 5." and alt.labels == [1.0, 1.0, 1.0]
    # neutral alternatives carry no label under "drop"
    dropped = load_prm800k(PRM_SMALL, include_alternatives=True, neutral="drop")
    assert sum(r.meta["branch"] is not None for r in dropped) == len(branches) - 2


def test_prm800k_rejects_unknown_neutral_policy():
    with pytest.raises(ValueError, match="neutral"):
        load_prm800k(PRM_SMALL, neutral="maybe")


def test_prm800k_malformed_raises_with_file_and_line():
    with pytest.raises(PRMDataError, match=r"prm800k_bad\.jsonl:2: not valid JSON"):
        load_prm800k(PRM_BAD)


def test_prm800k_skip_bad_counts_and_logs(caplog):
    with caplog.at_level(logging.WARNING, logger="prm.data.records"):
        res = load_prm800k(PRM_BAD, skip_bad=True)
    assert len(res) == 2 and res.skipped == 5
    lines = [int(w.split(":")[1]) for w in (s[len(str(PRM_BAD)) :] for s in res.skipped_where)]
    assert lines == [2, 3, 4, 5, 7]
    text = "\n".join(res.skipped_where)
    assert "no 'question' object" in text
    assert "chosen_completion 3 is not an index" in text
    assert "rating 2" in text and "expected a JSON object" in text
    assert any("prm800k_bad.jsonl" in m and "skipped 5" in m for m in caplog.messages)


def test_prm800k_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "p.jsonl"
    good = PRM_SMALL.read_bytes().splitlines()[0]
    path.write_bytes(good + b"\n" + good.replace(b'"question"', b'"q\xffuestion"', 1) + b"\n" + good + b"\n")
    with pytest.raises(PRMDataError, match=r"p\.jsonl:2: not valid UTF-8"):
        load_prm800k(path)
    res = load_prm800k(path, skip_bad=True)
    assert res.skipped == 1 and res.skipped_where[0].startswith(f"{path}:2: not valid UTF-8")


def test_prm800k_folder(tmp_path):
    shutil.copy(PRM_SMALL, tmp_path / "a.jsonl")
    shutil.copy(PRM_SMALL, tmp_path / "b.jsonl")
    res = load_prm800k(tmp_path)
    assert len(res) == 10 and {r.meta["file"] for r in res} == {"a.jsonl", "b.jsonl"}


# --- Math-Shepherd ----------------------------------------------------------------------------


def test_math_shepherd_records():
    res = load_math_shepherd(MS_SMALL)
    assert len(res) == 3 and res.skipped == 0
    a, b, c = res
    assert a.problem == "Tom has 3 apples and buys 2 more. How many apples does he have?"
    assert a.steps == ["He has 3 + 2 = <<3+2=5>>5 apples.", "The answer is: 5"]
    assert a.labels == [1.0, 1.0] and a.meta["task"] == "GSM8K" and a.gold_answer is None
    # '+' inside the maths does not confuse the labels
    assert b.problem == "What is $1+2+3$?"
    assert b.steps == ["First, $1+2=3$.", "Then $3+3=7$.", "The answer is: 7"]
    assert b.labels == [1.0, 0.0, 0.0] and b.meta["raw_labels"] == "+--"
    assert c.labels == [1.0, 0.0] and "_source" not in c.meta and c.source == "math_shepherd"


def test_math_shepherd_malformed():
    with pytest.raises(PRMDataError, match=r"math_shepherd_bad\.jsonl:2: not valid JSON"):
        load_math_shepherd(MS_BAD)
    res = load_math_shepherd(MS_BAD, skip_bad=True)
    assert len(res) == 2 and res.skipped == 5
    where = res.skipped_where
    assert ":3: no 'label' string" in where[1]
    assert ":4: " in where[2] and "count mismatch" in where[2]
    assert ":5: " in where[3] and "expected '+' or '-'" in where[3]
    assert ":6: 'input' has no 'ки' step tag" in where[4]


def test_parse_math_shepherd_edge_cases():
    q, steps, marks = parse_math_shepherd(
        "Q? Step 1: a ки\nStep 2: b ки", "Q? Step 1: a -\nStep 2: b +"
    )
    assert (q, steps, marks) == ("Q?", ["a", "b"], "-+")
    with pytest.raises(ValueError, match="after its last"):
        parse_math_shepherd("Q? Step 1: a ки tail", "Q? Step 1: a + tail")
    with pytest.raises(ValueError, match="Step 1:"):
        parse_math_shepherd("Q? a ки", "Q? a +")
    with pytest.raises(ValueError, match="differs"):
        parse_math_shepherd("Q? Step 1: a ки", "Q? Step 1: b +")
    with pytest.raises(ValueError, match="empty"):
        parse_math_shepherd("Q? Step 1: a ки\nStep 2:ки", "Q? Step 1: a +\nStep 2:+")


# --- TRL export -------------------------------------------------------------------------------


def test_to_trl_thresholds_soft_labels():
    rec = StepLabelled("Q", ["a", "b", "c"], [0.5, 0.49, 1.0], source="auto")
    assert to_trl(rec) == {
        "prompt": "Q", "completions": ["a", "b", "c"], "labels": [True, False, True]
    }
    assert to_trl(rec, threshold=0.75)["labels"] == [False, False, True]


def test_export_trl(tmp_path):
    recs = list(load_prm800k(PRM_SMALL, neutral="bad")) + list(load_math_shepherd(MS_SMALL))
    out = tmp_path / "trl.jsonl"
    assert export_trl(recs, out) == len(recs)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {
        "prompt": "What is 2 + 3?",
        "completions": ["We need 2 + 3.", "Hmm, let me think.", "2 + 3 = 6."],
        "labels": [True, False, False],
    }
    assert all(len(r["completions"]) == len(r["labels"]) for r in rows)
    assert all(isinstance(x, bool) for r in rows for x in r["labels"])


# --- the real sample records (skipped when ../shared/data is absent) ---------------------------


def _raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@needs_real
def test_real_prm800k_all_records_load():
    for name, counts in [
        ("phase1_train_sample3.jsonl", [6, 29, 6]),
        ("phase2_train_sample9.jsonl", [7, 19, 3, 2, 3, 11, 2, 26, 3]),
    ]:
        path = REAL / "prm800k" / name
        raws = _raw(path)
        res = load_prm800k(path)
        assert res.skipped == 0 and res.excluded == {} and len(res) == len(raws)
        assert [len(r.steps) for r in res] == counts
        for rec, raw in zip(res, raws):
            assert rec.problem == raw["question"]["problem"]
            assert rec.gold_answer == raw["question"]["ground_truth_answer"]
            # every step before the last follows the human or the chosen completion
            for i, (text, step) in enumerate(zip(rec.steps, raw["label"]["steps"])):
                human, chosen = step["human_completion"], step["chosen_completion"]
                if human is not None:
                    assert text == human["text"]
                elif chosen is not None:
                    assert text == step["completions"][chosen]["text"]
                else:
                    assert i == len(rec.steps) - 1


@needs_real
def test_real_prm800k_exact_labels():
    path = REAL / "prm800k" / "phase2_train_sample9.jsonl"
    raws = _raw(path)
    good, bad = load_prm800k(path), load_prm800k(path, neutral="bad")
    for rec, raw in zip(good, raws):
        # every phase-2 sample is found_error: all steps before the last are not wrong, the
        # last is the pre-generated step the labeler rated -1
        assert rec.meta["finish_reason"] == "found_error"
        assert rec.labels == [1.0] * (len(rec.steps) - 1) + [0.0]
        last = raw["label"]["steps"][-1]["completions"][0]
        assert last["rating"] == -1 and rec.steps[-1] == last["text"]
        assert rec.steps[-1] == raw["question"]["pre_generated_steps"][len(rec.steps) - 1]
    assert good[0].gold_answer == "28800"
    assert bad[0].labels == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    assert bad[0].meta["ratings"] == [1, 0, 1, 1, 1, 1, -1]
    assert bad[3].labels == [0.0, 0.0]

    p1 = load_prm800k(REAL / "prm800k" / "phase1_train_sample3.jsonl")
    assert [r.gold_answer for r in p1] == ["29", "440", "40_9"]
    assert [r.meta["finish_reason"] for r in p1] == ["solution", "give_up", "solution"]
    assert p1[0].steps[1] == "We have $3p+e=1.24$ and $5p+e=1.82$."  # a human step
    assert p1[0].meta["human_steps"] == [1] and p1[2].meta["human_steps"] == [0, 4]
    # phase 1 negatives sit only in the rejected alternatives
    assert all(x == 1.0 for r in p1 for x in r.labels)


@needs_real
def test_real_prm800k_alternatives():
    for path in sorted((REAL / "prm800k").glob("*.jsonl")):
        raws = _raw(path)
        main = load_prm800k(path)
        res = load_prm800k(path, include_alternatives=True)
        expected = 0
        for rec, raw in zip(main, raws):
            for step in raw["label"]["steps"][: len(rec.steps)]:
                rated = [c for c in step["completions"] if c["rating"] is not None]
                picked = step["human_completion"] is None  # one rated completion is on the path
                expected += len(rated) - picked
        assert len(res) == len(main) + expected
        for r in res:
            if r.meta["branch"] is not None:
                raw = raws[r.meta["line"] - 1]
                b = r.meta["branch"]
                assert len(r.steps) == b["step"] + 1
                comp = raw["label"]["steps"][b["step"]]["completions"][b["completion"]]
                assert r.steps[-1] == comp["text"]
                assert r.labels[-1] == (0.0 if comp["rating"] == -1 else 1.0)


@needs_real
def test_real_math_shepherd(tmp_path):
    res = load_math_shepherd(REAL / "math_shepherd")
    assert len(res) == 1 and res.skipped == 0
    rec = res[0]
    assert rec.problem.startswith("If Buzz bought a pizza with 78 slices")
    assert rec.problem.endswith("twenty less the number of slices of pizza that the waiter ate?")
    assert len(rec.steps) == 5 and rec.labels == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert rec.steps[0] == "The total ratio representing the pizza is 5+8 = <<5+8=13>>13."
    assert rec.steps[-1] == "The waiter ate 52 slices of the pizza. The answer is: 52"
    assert rec.meta["task"] == "GSM8K" and set(rec.meta) == {"task", "raw_labels", "file", "line"}
    export_trl(res, tmp_path / "t.jsonl")
    row = json.loads((tmp_path / "t.jsonl").read_text())
    assert row["labels"] == [True, False, False, False, False]


def test_processbench_loader(tmp_path):
    rows = [
        {"id": "a", "problem": "1+1?", "steps": ["1+1=3", "\\boxed{3}"], "label": 0},
        {"id": "b", "problem": "2+2?", "steps": ["2+2=4", "\\boxed{4}"], "label": -1},
    ]
    (tmp_path / "pb.json").write_text(json.dumps(rows))
    recs = list(load_processbench(tmp_path / "pb.json"))
    assert [r.labels for r in recs] == [[0.0, 0.0], [1.0, 1.0]]
    assert [r.first_error() for r in recs] == [0, -1]
    (tmp_path / "pb.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"problem": "x", "steps": ["a"], "label": 4}\n')
    with pytest.raises(PRMDataError, match=r"pb.jsonl:3: 'label' must be -1 or a step index"):
        load_processbench(tmp_path / "pb.jsonl")
    res = load_processbench(tmp_path / "pb.jsonl", skip_bad=True)
    assert len(res) == 2 and res.skipped == 1


def test_unknown_data_source_is_named(tmp_path):
    from prm.data.mix import build_mix

    with pytest.raises(ValueError, match="unknown PRM data source.*'shepherd'"):
        build_mix({"shepherd": {"paths": []}}, lambda: None, tmp_path)


def test_corrupted_solutions_end_at_one_exactly_labelled_wrong_step(tmp_path):
    from evals.prm_error_types import error_kind
    from itc.toy import task
    from prm.data.mix import build_mix
    from prm.data.toy import corrupted_records

    problems = generate(300, 0, (1, 2, 3, 4, 5), "train")
    records = corrupted_records(problems, samples_per_problem=2, seed=0)
    assert len(records) == 2 * len(problems)
    kinds = set()
    for p, r in zip([p for p in problems for _ in range(2)], records):
        k = r.meta["corrupted_step"]
        assert len(r.steps) == k + 1 and r.labels == [1.0] * k + [0.0]
        assert r.labels == [float(x) for x in task.step_labels(p, r.steps)]  # a valid prefix, any order
        kinds.add(error_kind(p, r.steps[:k], r.steps[k]).split(" ")[0])
    assert kinds == {"operation", "result", "operand", "repeat", "answer"}
    assert corrupted_records(problems, 2, seed=0) == records  # deterministic
    mixed, counts = build_mix(
        {"toy_corrupted": {"num_problems": 10, "levels": [1, 2], "seed": 1}}, lambda: None, tmp_path
    )
    assert counts == {"toy_corrupted": 10} and all(r.labels[-1] == 0.0 for r in mixed)
