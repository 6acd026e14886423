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


def test_asking_a_level_for_more_problems_than_it_has_is_an_error():
    import pytest

    with pytest.raises(ValueError, match="toy level 1 has fewer distinct test problems"):
        generate(2000, seed=0, levels=(1,), split="test")


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


def test_long_chain_setting():
    (p,) = generate(1, seed=0, long_chain_steps=64)
    assert len(p.reference_steps()) == 65
    assert parse_problem(p.text).answer == p.answer


def test_parse_problem_rejects_other_text():
    import pytest

    with pytest.raises(ValueError, match="not a toy-world problem"):
        parse_problem("What is 2+2?")
