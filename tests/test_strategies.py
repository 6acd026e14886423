"""Strategies: selection logic on small fakes, and runs through the real vLLM engine."""

from collections.abc import Sequence

import pytest

from itc.policy.base import Policy, PromptConfig, SamplingConfig
from itc.toy import generate
from itc.types import Candidate, Completion
from itc.candidates import majority_choice, make_candidate
from strategies.greedy import Greedy
from strategies.majority import MajorityVote


def cand(answer):
    return Candidate(text="", steps=[], answer=answer, completion_tokens=1)


def test_majority_choice_groups_equivalent_answers():
    cands = [cand("3"), cand("\\frac12"), cand("3"), cand("0.5"), cand("\\dfrac{1}{2}")]
    assert majority_choice(cands) == 1  # three votes for one half, first seen at index 1


def test_majority_choice_ties_go_to_first_and_no_answer_never_wins():
    assert majority_choice([cand("2"), cand("5")]) == 0
    assert majority_choice([cand(None), cand(None), cand("7")]) == 2
    assert majority_choice([cand(None)]) is None


def test_weighted_majority():
    cands = [cand("1"), cand("1"), cand("2")]
    assert majority_choice(cands, weights=[0.1, 0.1, 0.9]) == 2


def test_make_candidate_splits_steps_and_extracts_answer():
    c = make_candidate("A+3 2+3=5\n\n\\boxed{5}", "\n\n", Completion("", 9, True, "eos"))
    assert c.steps == ["A+3 2+3=5", "\\boxed{5}"] and c.answer == "5"
    assert c.completion_tokens == 9 and c.finished


class FakePolicy(Policy):
    """Returns scripted solutions; counts calls (strategy logic only)."""

    name = "fake"
    max_model_len = 1000

    def __init__(self, texts):
        self.texts = texts
        self.prompt_config = PromptConfig(chat_template=False)
        self.sampling = SamplingConfig()
        self.calls = []

    @property
    def num_parameters(self):
        return 1

    def encode_prompts(self, prompts):
        return [[0] * len(p) for p in prompts]

    def generate(self, prompts: Sequence[str], n=1, *, temperature=None, max_tokens=None, one_step=False, request_keys=None):
        self.calls.append((len(prompts), n, temperature))
        self.keys = request_keys
        return [[Completion(self.texts[j % len(self.texts)], 5, True, "eos") for j in range(n)] for _ in prompts]


def test_majority_with_fake_policy_counts_tokens():
    problems = [p.to_problem() for p in generate(2, seed=0)]
    policy = FakePolicy(["\\boxed{1}", "\\boxed{2}", "\\boxed{2}"])
    results = MajorityVote(n=3).run(problems, policy)
    assert policy.calls == [(2, 3, None)]
    assert policy.keys == [p.id for p in problems]  # each problem samples under its own seed
    assert [r.chosen_answer for r in results] == ["2", "2"]
    assert results[0].completion_tokens == 15
    assert results[0].prompt_tokens == 3 * len(problems[0].problem)  # once per sample


def test_greedy_uses_temperature_zero():
    policy = FakePolicy(["\\boxed{4}"])
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
