"""Grading through math-verify: cases that must and must not be equivalent."""

import threading
import time

import pytest

from itc.grading import answers_equivalent, extract_boxed, grade, group_by_equivalence

EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac12", "\\frac{1}{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("[-2,7]", "[-2, 7]"),
    ("90^\\circ", "90"),
    ("3, 5, 7", "\\{3,5,7\\}"),
    ("\\begin{pmatrix} 3 \\\\ 1 \\end{pmatrix}", "\\begin{pmatrix}3\\\\1\\end{pmatrix}"),
    ("\\text{(C)}", "C"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("-12", "-12.0"),
]
NOT_EQUIVALENT = [
    ("\\frac{1}{2}", "\\frac{1}{3}"),
    ("[-2,7]", "(-2,7)"),
    ("x^2+1", "x^2-1"),
    ("3", "4"),
    ("\\sqrt{2}", "2"),
    ("(1,2)", "(2,1)"),
    ("12", "21"),
]


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent(pred, gold):
    assert answers_equivalent(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_not_equivalent(pred, gold):
    assert not answers_equivalent(pred, gold)


def test_extract_last_box_with_nested_braces():
    assert extract_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b^{2}}}.") == "\\frac{a}{b^{2}}"
    assert extract_boxed("\\fbox{7}") == "7"
    assert extract_boxed("so \\boxed 5$") == "5"
    assert extract_boxed("no answer") is None
    assert extract_boxed("\\boxed{unclosed") is None


def test_grade_whole_solution_text():
    assert grade("A+3 2+3=5\n\n\\boxed{5}", "5")
    assert grade("Thus the answer is $\\boxed{\\dfrac{14}{3}}$.", "$\\frac{14}{3}$")
    assert not grade("\\boxed{6}", "5")
    assert not grade("I give up", "5")


def test_grouping_by_equivalence_not_string():
    classes = group_by_equivalence(["0.5", "\\frac12", "1", None, "\\dfrac{1}{2}", "1.0"])
    assert classes[0] == classes[1] == classes[4]
    assert classes[2] == classes[5] != classes[0]
    assert classes[3] is None


def test_grading_works_from_worker_threads():
    pairs = [("\\sqrt{8}", "2\\sqrt{2}"), ("x^2-1", "(x-1)(x+1)"), ("\\frac{1}{3}", "0.5")]
    out: dict[int, bool] = {}

    def work(i, pred, gold):
        out[i] = answers_equivalent(pred, gold)

    threads = [threading.Thread(target=work, args=(i, *pg)) for i, pg in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {0: True, 1: True, 2: False}


def test_deadline_in_worker_thread_kills_a_hanging_check():
    """A check that overruns its deadline in a thread returns False instead of hanging."""
    from itc.grading import verify

    result: list[bool] = []

    def work():
        t0 = time.time()
        # the worker process sleeps past the deadline (stands in for a sympy hang)
        future = verify._worker_pool().schedule(time.sleep, args=(30,), timeout=1)
        try:
            future.result()
            result.append(True)
        except verify.FutureTimeout:
            result.append(time.time() - t0 < 10)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert result == [True]
    # the killed worker is replaced: a real check from a thread still answers
    again: list[bool] = []
    t = threading.Thread(target=lambda: again.append(answers_equivalent.__wrapped__("\\sqrt{4}", "2")))
    t.start()
    t.join(60)
    assert again == [True]


def test_equal_canonical_strings_are_grouped_without_math_verify(monkeypatch):
    from itc.grading import verify

    def no_sympy(*args, **kwargs):
        raise AssertionError("math-verify called for answers with equal canonical strings")

    monkeypatch.setattr(verify, "_verify_latex", no_sympy)
    assert group_by_equivalence(["2x", "2 x", "2x.", None]) == [0, 0, 0, None]


def test_an_answer_that_timed_out_once_is_not_parsed_again(monkeypatch):
    """Real math-verify on a power tower, with a 1 s deadline: it runs out of time once,
    and from then on the tower stands alone without another parse."""
    from itc.grading import verify

    tower = "7^{7^{7^{7}}}"
    assert group_by_equivalence(["3", tower], timeout=1) == [0, 1]
    assert verify.timed_out(tower)
    calls = []
    real = verify._verify_latex
    monkeypatch.setattr(verify, "_verify_latex", lambda gold, pred, *a: calls.append((gold, pred)) or real(gold, pred, *a))
    assert group_by_equivalence(["5", tower, "\\frac{10}{2}", tower], timeout=1) == [0, 1, 0, 1]
    assert all(tower not in pair for pair in calls) and calls == [("5", "\\frac{10}{2}")]


def test_a_spent_grading_budget_groups_by_exact_string_and_says_so():
    from itc.grading import GradingBudget

    budget = GradingBudget(seconds=0)
    assert group_by_equivalence(["0.5", "\\frac12", "0.5", "1/2"], budget=budget) == [0, 1, 0, 2]
    assert budget.exhausted
    roomy = GradingBudget()
    assert group_by_equivalence(["0.5", "\\frac12"], budget=roomy) == [0, 0] and not roomy.exhausted


def test_the_record_says_when_grading_fell_back_to_exact_strings(monkeypatch):
    from itc.grading import verify
    from itc.runner import to_record
    from itc.types import Candidate, Problem, StrategyResult
    from itc.candidates import majority_choice

    def result():
        cands = [Candidate(text="", steps=[], answer=a, completion_tokens=1) for a in ("\\dfrac12", "0.5", "1")]
        return StrategyResult("p", cands, majority_choice(cands), "\\dfrac12")

    problem = Problem(id="p", problem="?", answer="\\frac12")
    record = to_record(problem, result(), 0.0)
    assert record["graded_by_exact_string"] is False and record["correct"]
    assert [c["correct"] for c in record["candidates"]] == [True, True, False]
    monkeypatch.setattr(verify, "DEFAULT_BUDGET_S", 0.0)
    verify.answers_equivalent.cache_clear()
    spent = result()
    assert all(c.meta.get("graded_by_exact_string") for c in spent.candidates)
    record = to_record(problem, spent, 0.0)
    assert record["graded_by_exact_string"] is True
    assert [c["correct"] for c in record["candidates"]] == [True, False, False]  # "\dfrac12" is "\frac12" as a string
