"""Gold step labels on the embedded world: solutions sampled from a policy, labelled exactly.

Every step of a toy-world solution can be checked against the reference, so sampled
solutions (with the policy's own, on-distribution mistakes) get gold labels for free: a step
is good while the solution is still exactly on track (:func:`itc.toy.task.step_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence

from itc.policy import Policy
from itc.toy import task
from itc.types import Problem
from prm.data.records import StepLabelled
from strategies.base import split_steps


def gold_records(
    problems: Sequence[Problem],
    solutions: Sequence[Sequence[str]],
    delimiter: str = task.STEP_DELIMITER,
) -> list[StepLabelled]:
    """One record per solution text (``solutions[i]`` are problem i's); empty ones skipped."""
    records = []
    for problem, texts in zip(problems, solutions):
        for j, text in enumerate(texts):
            steps = split_steps(text, delimiter)
            if not steps:
                continue
            labels = task.step_labels(problem.problem, steps)
            records.append(
                StepLabelled(
                    problem=problem.problem,
                    steps=steps,
                    labels=[float(x) for x in labels],
                    gold_answer=problem.answer,
                    source="toy",
                    meta={"problem_id": problem.id, "sample": j, "level": problem.level},
                )
            )
    return records


def sample_gold_records(
    policy: Policy,
    problems: Sequence[Problem],
    samples_per_problem: int,
    temperature: float | None = None,
) -> list[StepLabelled]:
    """Sample ``samples_per_problem`` solutions per problem in one batched call; label them."""
    prompts = [policy.format_prompt(p.problem) for p in problems]
    outputs = policy.generate(prompts, n=samples_per_problem, temperature=temperature)
    texts = [[c.text for c in comps] for comps in outputs]
    return gold_records(problems, texts, policy.step_delimiter)
