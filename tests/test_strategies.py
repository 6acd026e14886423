"""Strategies: selection logic on small fakes, and runs through the real vLLM engine."""

import pytest

from fakes import ScriptedPolicy
from itc.toy import generate
from strategies.greedy import Greedy
from strategies.majority import MajorityVote


def test_majority_with_fake_policy_counts_tokens():
    problems = [p.to_problem() for p in generate(2, seed=0)]
    policy = ScriptedPolicy(["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"])
    results = MajorityVote(n=3).run(problems, policy)
    assert policy.calls == [(2, 3, None)]
    assert policy.keys == [p.id for p in problems]  # each problem samples under its own seed
    assert [r.chosen_answer for r in results] == ["2", "2"]
    assert results[0].completion_tokens == 15
    assert results[0].prompt_tokens == 3 * len(problems[0].problem)  # once per sample


def test_greedy_uses_temperature_zero():
    policy = ScriptedPolicy(["\\boxed{4}"])
    (r,) = Greedy().run([generate(1, seed=0)[0].to_problem()], policy)
    assert policy.calls == [(1, 1, 0.0)] and r.chosen_answer == "4"


@pytest.mark.vllm
def test_greedy_and_majority_through_vllm(vllm_policy):
    problems = [p.to_problem() for p in generate(10, seed=2)]
    greedy = Greedy().run(problems, vllm_policy)
    assert len(greedy) == 10 and all(len(r.candidates) == 1 for r in greedy)
    assert sum(r.chosen_answer is not None for r in greedy) >= 8
    maj = MajorityVote(n=8).run(problems, vllm_policy)
    for r in maj:
        assert len(r.candidates) == 8
        assert r.completion_tokens == sum(c.completion_tokens for c in r.candidates) > 0
        answers = [c.answer for c in r.candidates]
        if r.chosen_answer is not None:
            assert answers.count(r.chosen_answer) == max(answers.count(a) for a in answers if a is not None)
