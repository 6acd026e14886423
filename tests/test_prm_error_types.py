"""Sorting first errors by kind (evals.prm_error_types), on the embedded world's steps."""

from evals.prm_error_types import error_kind, outcomes
from itc.toy import parse_problem

IN_ORDER = parse_problem("Start at 7 and do A+5 B-3 C*2.")  # with *, the order is fixed
ANY_ORDER = parse_problem("Start at 20 and do A+5 B-3 C+4.")
REFERENCE = IN_ORDER.reference_steps()


def test_error_kinds_of_toy_steps():
    assert REFERENCE[:3] == ["A+5 7+5=12", "B-3 12-3=9", "C*2 9*2=18"]
    assert error_kind(IN_ORDER, [], "A+5 7+5=13") == "result +"
    assert error_kind(IN_ORDER, REFERENCE[:1], "B-3 12-3=8") == "result -"
    assert error_kind(IN_ORDER, REFERENCE[:2], "C*2 9*2=17") == "result *"
    assert error_kind(IN_ORDER, REFERENCE[:1], "B-3 13-3=10") == "operand"
    assert error_kind(IN_ORDER, REFERENCE[:1], "B+3 12+3=15") == "operation"
    assert error_kind(IN_ORDER, REFERENCE[:1], "C*2 12*2=24") == "operation"  # out of order
    assert error_kind(IN_ORDER, REFERENCE[:3], "\\boxed{17}") == "answer"
    assert error_kind(IN_ORDER, REFERENCE[:2], "the answer is 18") == "other"
    assert error_kind(IN_ORDER, REFERENCE, "A+5 7+5=12") == "other"  # after the answer


def test_error_kinds_when_any_order_is_valid():
    first = "C+4 20+4=24"
    assert error_kind(ANY_ORDER, [first], "B-3 24-3=20") == "result -"
    assert error_kind(ANY_ORDER, [first], "C+4 24+4=28") == "repeat"
    assert error_kind(ANY_ORDER, [first], "B-3 20-3=17") == "operand"
    assert error_kind(ANY_ORDER, [first], "B-4 24-4=20") == "operation"
    assert error_kind(ANY_ORDER, [first], "\\boxed{24}") == "answer"  # too early


def test_outcomes_count_found_missed_and_early():
    scores = [[0.9, 0.1], [0.9, 0.9], [0.1, 0.9], [0.9, 0.9]]
    first_errors = [1, 1, 1, -1]  # the last solution is right and not counted
    kinds = ["result +", "result +", "operand", ""]
    assert outcomes(scores, first_errors, kinds, 0.5) == {
        "result +": {"found": 1, "missed": 1, "early": 0},
        "operand": {"found": 0, "missed": 0, "early": 1},
    }


def test_report_on_a_trained_prm_and_exactly_labelled_toy_solutions(trained_prm, vllm_prm):
    """The report's pieces on real parts: toy problems with one step made wrong (exact
    labels), scored by the PRM itc-train-prm trained, through the session's vLLM engine."""
    from evals.prm_error_types import report
    from prm.evaluation import score_records
    from itc.toy import generate
    from prm.data.toy import corrupted_records

    problems = list(generate(20, seed=4, levels=(2, 3)))
    records = corrupted_records(problems, samples_per_problem=1, seed=4)
    first_errors = [r.first_error() for r in records]
    kinds = [error_kind(parse_problem(r.problem), r.steps[:e], r.steps[e]) for r, e in zip(records, first_errors)]
    assert all(e >= 0 for e in first_errors) and set(kinds) <= {"result +", "result -", "operand", "operation", "repeat", "answer"}
    out = report(score_records(vllm_prm, records), first_errors, kinds, [0.25, 0.5, 0.75])
    assert out["flawed"] == 10 and sum(sum(v.values()) for v in out["by_kind"].values()) == 10
