"""The embedded world's task: determinism, levels, held-out split, gold step labels."""

from itc.toy import LEVELS, generate, parse_problem, step_labels
from itc.toy.task import is_held_out, step_is_valid_arithmetic


def test_generate_is_deterministic_and_covers_levels():
    a, b = generate(50, seed=3), generate(50, seed=3)
    assert [p.text for p in a] == [p.text for p in b]
    assert [p.text for p in generate(50, seed=4)] != [p.text for p in a]
    assert {p.level for p in a} == set(LEVELS)
    for p in a:
        assert len(p.ops) == LEVELS[p.level].num_ops


def test_splits_are_disjoint():
    test = generate(200, seed=0, split="test")
    train = generate(200, seed=0, split="train")
    assert all(is_held_out(p) for p in test)
    assert not any(is_held_out(p) for p in train)
    assert not {p.text for p in test} & {p.text for p in train}


def test_asking_a_level_for_more_problems_than_it_has_is_an_error(monkeypatch):
    import pytest

    from itc.toy import task

    monkeypatch.setitem(task.LEVELS, 1, task.LevelSpec(1, "+"))  # about 110 held-out problems
    with pytest.raises(ValueError, match="toy level 1 has fewer distinct test problems"):
        generate(400, seed=0, levels=(1,), split="test")


def test_reference_solution_format_and_answer():
    for p in generate(20, seed=1):
        steps = p.solution.split("\n\n")
        assert steps[-1] == f"\\boxed{{{p.answer}}}"
        assert len(steps) == len(p.ops) + 1
        assert all(step_is_valid_arithmetic(s) for s in steps[:-1])
        assert parse_problem(p.text).answer == p.answer


def test_step_labels_mark_first_error_and_after():
    p = generate(1, seed=0, levels=(3,))[0]
    ref = p.reference_steps()
    assert step_labels(p, ref) == [True] * len(ref)
    wrong = list(ref)
    head, _, _ = wrong[1].rpartition("=")
    wrong[1] = head + "=999"
    labels = step_labels(p.text, wrong)
    assert labels[0] is True and not any(labels[1:])
    # a missing step: the solution is short and ends early with a wrong box
    assert step_labels(p, ref[:-2] + ["\\boxed{0}"])[-1] is False
    assert step_is_valid_arithmetic("A+4 3+4=8") is False
    assert step_is_valid_arithmetic("hello") is None


def test_any_order_of_the_operations_is_on_track():
    """Additions and subtractions commute: every order is a valid solution with the same
    answer, and the labels catch a step done twice, an early answer and a slip on any path."""
    import random

    for p in generate(30, seed=2):
        assert p.any_order
        values = [p.start]
        for op, x in p.ops:
            values.append(values[-1] + x if op == "+" else values[-1] - x)
        rng = random.Random(p.text)
        for _ in range(3):
            steps = p.random_solution(rng).split("\n\n")
            assert step_labels(p, steps) == [True] * len(steps)
            assert steps[-1] == f"\\boxed{{{p.answer}}}"
            assert all(0 <= int(s.rsplit("=", 1)[1]) <= 99 for s in steps[:-1])
    p = parse_problem("Start at 20 and do A+5 B-3 C+4.")
    assert p.reference_steps([2, 0, 1]) == ["C+4 20+4=24", "A+5 24+5=29", "B-3 29-3=26", "\\boxed{26}"]
    assert step_labels(p, ["C+4 20+4=24", "C+4 24+4=28"]) == [True, False]  # done twice
    assert step_labels(p, ["C+4 20+4=24", "\\boxed{24}"]) == [True, False]  # too early
    assert step_labels(p, ["B-3 20-3=17", "A+5 17+5=21"]) == [True, False]  # a slip
    assert step_labels(p, p.reference_steps() + ["A+5 26+5=31"]) == [True] * 4 + [False]
    assert sorted(p.next_steps(["B-3 20-3=17"])) == ["A+5 17+5=22", "C+4 17+4=21"]
    # with multiplication the order changes the answer, so only the given order is valid
    q = parse_problem("Start at 7 and do A+5 B*2.")
    assert not q.any_order and step_labels(q, ["B*2 7*2=14"]) == [False]


def test_long_chain_setting():
    (p,) = generate(1, seed=0, long_chain_steps=64)
    assert len(p.reference_steps()) == 65
    assert parse_problem(p.text).answer == p.answer


def test_parse_problem_rejects_other_text():
    import pytest

    with pytest.raises(ValueError, match="not a toy-world problem"):
        parse_problem("What is 2+2?")
