"""Datasets: MATH-500 JSONL, a MATH folder, the toy world, and clear errors on bad input."""

import json

import pytest

from conftest import FIXTURES, compose_run
from itc.data import DatasetError, load_math_local, load_problems
from itc.grading import grade


def test_math500_jsonl_records():
    problems = load_math_local(FIXTURES / "math500_sample.jsonl")
    assert len(problems) == 12
    p = problems[0]
    assert p.id == "test/precalculus/807.json"
    assert p.level == 2 and p.subject == "Precalculus"
    assert p.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_reference_solutions_grade_correct_against_their_answers():
    for p in load_math_local(FIXTURES / "math500_sample.jsonl"):
        assert grade(p.solution, p.answer), p.id


def test_math_folder_layout_and_answer_from_solution():
    problems = load_math_local(FIXTURES / "MATH")
    assert [p.id for p in problems] == ["test/algebra/1.json", "test/number_theory/7.json"]
    assert [p.answer for p in problems] == ["5", "2"]
    assert [p.level for p in problems] == [1, 2]
    assert problems[1].subject == "Number Theory"
    for p in problems:
        assert grade(p.solution, p.answer)


def test_dataset_configs_filter_and_limit():
    cfg = compose_run(["dataset=math500", f"dataset.path={FIXTURES / 'math500_sample.jsonl'}", "dataset.levels=[1]"])
    problems = load_problems(cfg.dataset)
    assert problems and all(p.level == 1 for p in problems)
    cfg = compose_run(["dataset=math", f"dataset.path={FIXTURES / 'MATH'}", "dataset.subjects=[number_theory]"])
    assert [p.id for p in load_problems(cfg.dataset)] == ["test/number_theory/7.json"]
    cfg = compose_run(["dataset.num_problems=10", "dataset.limit=3"])
    toy = load_problems(cfg.dataset)
    assert len(toy) == 3 and toy[0].id.startswith("toy-")


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"problem": "1+1?", "answer": "2"})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: not valid JSON"):
        load_math_local(path)
    path.write_text(good + "\n" + json.dumps({"problem": "x", "solution": "no box"}) + "\n")
    with pytest.raises(DatasetError, match=r"bad\.jsonl:2: record has no 'answer'"):
        load_math_local(path)


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_math_local(tmp_path / "nope.jsonl")


def test_hub_failure_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    cfg = compose_run(["dataset=math500", "dataset.hub_name=itc-test/does-not-exist"])
    with pytest.raises(DatasetError, match="dataset.path="):
        load_problems(cfg.dataset)


def test_a_numeric_answer_is_read_as_its_string(tmp_path):
    path = tmp_path / "n.jsonl"
    path.write_text(json.dumps({"problem": "6+6?", "answer": 12}) + "\n" + json.dumps({"problem": "1/2?", "answer": 0.5}) + "\n")
    assert [p.answer for p in load_math_local(path)] == ["12", "0.5"]
    path.write_text(json.dumps({"problem": "?", "answer": True}) + "\n")
    with pytest.raises(DatasetError, match=r"n\.jsonl:1: 'answer' is True, not a string or number"):
        load_math_local(path)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.json", b'[{"problem": "x", "answer": "1"},\n {"problem": ', r"bad\.json:2: not valid JSON"),
        ("list.json", b'["a string"]', r"list\.json\[0\]: expected a JSON object, got str"),
        ("obj.json", b'{"problem": "x"}', r"obj\.json: expected a JSON list of records, got dict"),
        ("utf.jsonl", b'{"problem": "x", "answer": "1"}\n{"problem": "\xff"}\n', r"utf\.jsonl:2: not valid UTF-8"),
        ("utf.json", b'[\n{"problem": "\xfe"}]', r"utf\.json:2: not valid UTF-8"),
    ],
)
def test_unreadable_dataset_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_math_local(path)


def test_a_dataset_that_selects_nothing_names_its_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DatasetError, match=r"dataset 'math500' \(.*empty\.jsonl\) selected no problems"):
        load_problems(compose_run(["dataset=math500", f"dataset.path={empty}"]).dataset)
    cfg = compose_run(["dataset=math500", f"dataset.path={FIXTURES / 'math500_sample.jsonl'}", "dataset.subjects=[Nothing]"])
    with pytest.raises(DatasetError, match="selected no problems after the levels/subjects filters"):
        load_problems(cfg.dataset)
