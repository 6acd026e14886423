"""Gold step labels on the embedded world: solutions sampled from a policy, labelled exactly.

Every step of a toy-world solution can be checked against the reference, so sampled
solutions (with the policy's own, on-distribution mistakes) get gold labels for free: a step
is good while the solution is still exactly on track (:func:`itc.toy.task.step_labels`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from itc.policy import Policy
from itc.toy import task
from itc.types import Problem
from prm.data.records import StepLabelled
from itc.candidates import split_steps


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


def _corrupt_step(problem: task.ToyProblem, order: Sequence[int], k: int, rng: random.Random) -> str:
    """Step ``k`` of ``problem``'s solution in ``order``, wrong in one of the ways a policy errs."""
    value = problem.start
    for i in order[:k]:
        value = task.apply_op(value, *problem.ops[i])
    if k == len(order):  # the final answer
        return f"\\boxed{{{_nearby(value, rng)}}}"
    i = order[k]
    op, x = problem.ops[i]
    label = task.op_label(i)
    kinds = ["result", "result", "operand", "operation"]
    if k and problem.any_order:  # an operation done again, or the answer given too early
        kinds += ["repeat", "early"]
    kind = rng.choice(kinds)
    if kind == "repeat":
        j = order[rng.randrange(k)]
        op2, x2 = problem.ops[j]
        if 0 <= task.apply_op(value, op2, x2) <= task.MAX_VALUE:
            return f"{task.op_label(j)}{op2}{x2} {value}{op2}{x2}={task.apply_op(value, op2, x2)}"
    if kind == "early":
        return f"\\boxed{{{value}}}"
    if kind == "operand":  # the running value is miscopied, the arithmetic then holds
        a2 = _nearby(value, rng)
        if 0 <= task.apply_op(a2, op, x) <= task.MAX_VALUE:
            return f"{label}{op}{x} {a2}{op}{x}={task.apply_op(a2, op, x)}"
    if kind == "operation":  # another of the problem's operations, or a made-up one
        others = [o for o in problem.ops if o != (op, x)]
        op2, x2 = rng.choice(others) if others and rng.random() < 0.5 else (op, _nearby(x, rng, 1, 9))
        if 0 <= task.apply_op(value, op2, x2) <= task.MAX_VALUE:
            return f"{label}{op2}{x2} {value}{op2}{x2}={task.apply_op(value, op2, x2)}"
    return f"{label}{op}{x} {value}{op}{x}={_nearby(task.apply_op(value, op, x), rng)}"  # the arithmetic slips


def _nearby(v: int, rng: random.Random, lo: int = 0, hi: int = task.MAX_VALUE) -> int:
    """A value close to ``v`` (off by a little, or by ten), never ``v`` itself."""
    for _ in range(100):
        w = v + rng.choice((-10, -3, -2, -1, 1, 2, 3, 10))
        if lo <= w <= hi and w != v:
            return w
    return lo if v != lo else lo + 1


def corrupted_records(
    problems: Sequence[task.ToyProblem], samples_per_problem: int = 1, seed: int = 0
) -> list[StepLabelled]:
    """Valid solutions (operations in a random order where any order is valid) with one step
    made wrong (a slipped result, a miscopied running value, a wrong operation, an operation
    done again, an early or wrong final answer), cut after that step (the PRM800K
    phase-2 convention): ``samples_per_problem`` per problem, the wrong step drawn for each.
    Labels are checked exactly by :func:`itc.toy.task.step_labels`.

    The policy's own mistakes are few (about one step in eight); these give the PRM as many
    mistakes as it needs to learn what a wrong step looks like."""
    rng = random.Random(f"corrupted-{seed}")
    records = []
    for p in problems:
        for _ in range(samples_per_problem):
            order = list(range(len(p.ops)))
            if p.any_order:
                rng.shuffle(order)
            reference = p.reference_steps(order)
            k = rng.randrange(len(reference))
            steps = reference[:k] + [_corrupt_step(p, order, k, rng)]
            labels = [float(x) for x in task.step_labels(p, steps)]
            assert labels == [1.0] * k + [0.0], (p.text, steps)
            records.append(
                StepLabelled(
                    problem=p.text,
                    steps=steps,
                    labels=labels,
                    gold_answer=str(p.answer),
                    source="toy",
                    meta={"problem_id": p.id, "level": p.level, "corrupted_step": k},
                )
            )
    return records


def token_targets(
    record: StepLabelled,
    input_ids: Sequence[int],
    positions: Sequence[int],
    decode: Callable[[int], str],
    hints: Sequence[float] | None = None,
    hint_weight: float = 0.0,
) -> dict[int, float]:
    """Dense labels for a toy-world record: every token of every step gets the label "still
    on track after this token" (the steps before were right and this step's text so far is a
    prefix of the reference step). The step tag's own label is that of the whole step.

    A step label says only that something in the step is wrong; these say where, at the token
    where a next-token predictor would have been surprised, which is the signal the verifier
    has to learn. ``positions`` are the step tags' token positions in ``input_ids``, and
    ``decode`` maps one token id to its text. Records whose steps cannot be lined up with
    their tokens get no dense labels ({}).

    ``hints`` (a probability per position of ``input_ids``: a causal LM's probability of
    that token given the ones before) blend into the targets with ``hint_weight``: a token
    reached on track gets ``(1 - w) * label + w * hint``, one after the solution left the
    track keeps 0. A calibrated LM's probability of a token is its estimate that the token
    is right, a graded signal at every token where the gold label changes at one."""
    try:
        problem = task.parse_problem(record.problem)
    except ValueError:
        return {}
    out: dict[int, float] = {}
    on_track = True
    for i, (step, tag) in enumerate(zip(record.steps, positions)):
        j, text = tag, ""
        while len(text) < len(step) and j > 0:  # the step's tokens end just before its tag
            j -= 1
            text = decode(input_ids[j]) + text
        if text != step:
            return {}
        valid = list(problem.next_steps(record.steps[:i]) or ()) if on_track else []
        prefix = ""
        before = bool(valid)
        for k in range(j, tag):
            prefix += decode(input_ids[k])
            gold = float(any(v.startswith(prefix) for v in valid))
            if hints is not None and hint_weight:
                out[k] = (1 - hint_weight) * gold + hint_weight * hints[k] if before else 0.0
            else:
                out[k] = gold
            before = bool(gold)
        on_track = step.strip() in valid
    return out
