"""Automatic (Math-Shepherd-style) labels with the toy policy through vLLM, vs gold labels."""

import pytest

from itc.toy import generate, step_labels
from prm.autolabel import agreement, rollout_labels
from itc.candidates import split_steps

pytestmark = pytest.mark.vllm


def test_rollout_labels_agree_with_gold_on_the_toy_world(vllm_policy):
    problems = [p.to_problem() for p in generate(12, seed=7, levels=(2, 3, 4))]
    prompts = [vllm_policy.format_prompt(p.problem) for p in problems]
    sampled = vllm_policy.generate(prompts, n=2)
    solutions = [[split_steps(c.text, "\n\n") or ["(empty)"] for c in cs] for cs in sampled]
    records = rollout_labels(vllm_policy, problems, solutions, n=4)
    assert len(records) == 24 and all(r.source == "auto" for r in records)
    gold = []
    for problem, sols in zip(problems, solutions):
        for steps in sols:
            gold.append(step_labels(problem.problem, steps))
    for rec, g in zip(records, gold):
        assert len(rec.labels) == len(rec.steps) == len(g)
        assert all(0.0 <= x <= 1.0 for x in rec.labels)
        # a final step is graded directly: right answer -> 1, wrong -> 0
        if rec.steps[-1].startswith("\\boxed"):
            assert rec.labels[-1] == float(g[-1]) or not all(g[:-1])
    report = agreement(records, gold)
    assert report["steps"] == sum(len(g) for g in gold)
    # the toy policy is a decent completer: hard labels agree with gold on most steps
    assert report["step_agreement"] >= 0.7, report
