"""itc.candidates: candidates from solution texts, sampling N of them, and the vote."""

from fakes import ScriptedPolicy, cand
from itc.candidates import majority_choice, majority_is_right, make_candidate, sample_candidates
from itc.toy import generate
from itc.types import Completion


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


def test_sample_candidates_makes_n_candidates_per_problem_through_the_given_call():
    problems = [p.to_problem() for p in generate(2, seed=0)]
    policy = ScriptedPolicy(["A+1 1+1=2\n\n\\boxed{2}", "\\boxed{3}"])
    samples = sample_candidates(policy, problems, 3, temperature=0.5)
    assert policy.calls == [(2, 3, 0.5)] and policy.keys is None
    assert [[c.answer for c in cs] for cs in samples] == [["2", "3", "2"]] * 2
    assert samples[0][0].steps == ["A+1 1+1=2", "\\boxed{2}"] and samples[0][0].completion_tokens == 5
    seen = []

    def metered(prompts, n, **kw):
        seen.append((prompts, n, kw))
        return policy.generate(prompts, n, **kw)

    sample_candidates(policy, problems[:1], 2, metered, request_keys=["k"])
    assert seen == [([policy.format_prompt(problems[0].problem)], 2, {"request_keys": ["k"]})]


def test_majority_is_right_when_the_vote_picks_a_right_candidate():
    cands = [cand("1"), cand("2"), cand("2")]
    assert majority_is_right(cands, [False, True, True])
    assert not majority_is_right(cands, [True, False, False])
    assert not majority_is_right([cand(None)], [False])  # no answer: no pick
