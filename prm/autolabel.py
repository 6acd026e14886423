"""Automatic step labels by the Math-Shepherd method, with our own policy.

From each step prefix of a solution, the policy (the "completer") rolls out ``n``
completions; each is graded against the gold answer. Hard estimate: 1.0 if any rollout
reaches the answer; soft estimate: the fraction that do (Wang et al., Math-Shepherd).
All prefixes of all solutions go to the policy in one batched call.
"""

from __future__ import annotations

from collections.abc import Sequence

from itc.grading import answers_equivalent, extract_boxed
from itc.policy import Policy
from itc.types import Problem
from prm.data import StepLabelled


def rollout_labels(
    policy: Policy,
    problems: Sequence[Problem],
    solutions: Sequence[Sequence[list[str]]],
    n: int = 8,
    temperature: float | None = None,
) -> list[StepLabelled]:
    """Hard and soft labels for every step of every solution (one record per solution).

    ``solutions[i]`` holds the step lists of problem ``i``'s solutions. A prefix that
    already ends in a final answer is graded directly instead of rolled out. The record's
    ``labels`` are the soft estimates; ``meta["hard_labels"]`` the hard ones.
    """
    prompts: list[str] = []
    where: list[tuple[int, int, int]] = []  # (problem, solution, step)
    for i, (problem, sols) in enumerate(zip(problems, solutions)):
        for j, steps in enumerate(sols):
            for k in range(len(steps)):
                if extract_boxed(steps[k]) is None:
                    prompts.append(policy.format_prompt(problem.problem, steps[: k + 1]))
                    where.append((i, j, k))
    outputs = policy.generate(prompts, n=n, temperature=temperature) if prompts else []
    soft: dict[tuple[int, int, int], float] = {}
    tokens = 0
    for key, completions in zip(where, outputs):
        gold = problems[key[0]].answer
        soft[key] = sum(answers_equivalent(extract_boxed(c.text), gold) for c in completions) / n
        tokens += sum(c.num_tokens for c in completions)
    records = []
    for i, (problem, sols) in enumerate(zip(problems, solutions)):
        for j, steps in enumerate(sols):
            labels = [
                soft[(i, j, k)]
                if (i, j, k) in soft
                else float(answers_equivalent(extract_boxed(steps[k]), problem.answer))
                for k in range(len(steps))
            ]
            records.append(
                StepLabelled(
                    problem=problem.problem,
                    steps=list(steps),
                    labels=labels,
                    gold_answer=problem.answer,
                    source="auto",
                    meta={
                        "problem_id": problem.id,
                        "hard_labels": [float(x > 0) for x in labels],
                        "rollouts_per_step": n,
                    },
                )
            )
    if records:
        records[0].meta["rollout_tokens_total"] = tokens
    return records


def agreement(auto: Sequence[StepLabelled], gold: Sequence[Sequence[bool]]) -> dict[str, float]:
    """How often hard automatic labels agree with gold step labels (step level), and how
    often the first step labelled bad matches the first gold error (solution level)."""
    steps = agree = first_agree = 0
    for rec, gold_labels in zip(auto, gold):
        hard = [x > 0 for x in rec.meta["hard_labels"]]
        steps += len(hard)
        agree += sum(h == g for h, g in zip(hard, gold_labels))
        first = lambda xs: next((k for k, x in enumerate(xs) if not x), -1)  # noqa: E731
        first_agree += first(hard) == first(list(gold_labels))
    return {
        "solutions": len(auto),
        "steps": steps,
        "step_agreement": agree / steps if steps else 0.0,
        "first_error_agreement": first_agree / len(auto) if auto else 0.0,
    }
