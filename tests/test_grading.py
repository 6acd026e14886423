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
