"""Which first errors a PRM finds, by kind of error, beside the LM-probability reference.

    python -m evals.prm_error_types [--prm-model toy] [--lm toy-qwen2] [--problems 300] [--samples 4]

Samples held-out embedded-world solutions from the toy policy, labels every step exactly,
and sorts each flawed solution by the kind of its first wrong step (a slipped result of
+, - or *, a miscopied running value, a wrong operation, an operation done again, a wrong
final answer, other).
For the PRM and for the LM's own token probabilities (:mod:`evals.lm_verifier`), the
first-error threshold is chosen on the first half of the problems; on the second half each
flawed solution counts as found (the first step under the threshold is the first error),
missed (no step under it, or a later one) or early (an earlier one). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from itc.toy.task import ToyProblem

_STEP = re.compile(r"^(\S+?)([+\-*])(\d+) (\d+)([+\-*])(\d+)=(\d+)$")
KINDS = ("result +", "result -", "result *", "operand", "operation", "repeat", "answer", "other")


def error_kind(problem: ToyProblem, steps_before: Sequence[str], step: str) -> str:
    """The kind of mistake in ``step``, the first wrong step, after the on-track ``steps_before``:
    a slipped result, a miscopied running value, a wrong operation, an operation done again,
    a wrong or early final answer, or other."""
    valid = problem.next_steps(steps_before)
    if not valid:
        return "other"
    if "\\boxed" in step or any("\\boxed" in v for v in valid):
        return "answer"
    got = _STEP.match(step.strip())
    if not got:
        return "other"
    if got.group(2, 3) != got.group(5, 6):  # does another operation than it names
        return "operation"
    done = {s.split(" ", 1)[0] for s in steps_before}
    head = f"{got.group(1)}{got.group(2)}{got.group(3)}"
    if head in done:
        return "repeat"
    wants = {v.split(" ", 1)[0]: v for v in valid}
    if head not in wants:
        return "operation"
    want = _STEP.match(wants[head])
    if got.group(4) != want.group(4):
        return "operand"
    return f"result {want.group(2)}"


def outcomes(
    scores: Sequence[Sequence[float]], first_errors: Sequence[int], kinds: Sequence[str], threshold: float
) -> dict[str, dict[str, int]]:
    """Per kind of first error: how many flawed solutions were found, missed or flagged early."""
    from prm.metrics import first_error

    out: dict[str, Counter] = {}
    for s, gold, kind in zip(scores, first_errors, kinds):
        if gold < 0:
            continue
        got = first_error(s, threshold)
        verdict = "found" if got == gold else "early" if 0 <= got < gold else "missed"
        out.setdefault(kind, Counter())[verdict] += 1
    return {k: {v: out[k][v] for v in ("found", "missed", "early")} for k in KINDS if k in out}


def report(
    scores: Sequence[Sequence[float]], first_errors: Sequence[int], kinds: Sequence[str], grid: Sequence[float]
) -> dict:
    from prm.metrics import best_threshold, processbench

    half = len(scores) // 2
    th = best_threshold(scores[:half], first_errors[:half], grid)
    return {
        **processbench(scores[half:], first_errors[half:], th),
        "by_kind": outcomes(scores[half:], first_errors[half:], kinds[half:], th),
    }


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prm-model", default="toy", help="PRM checkpoint (toy = the cached toy PRM)")
    ap.add_argument("--lm", default="toy-qwen2", help="reference LM: toy-qwen2, toy (the policy) or a path")
    ap.add_argument("--problems", type=int, default=300, help="held-out problems (half calibrate)")
    ap.add_argument("--samples", type=int, default=4, help="solutions sampled per problem")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from hydra import compose, initialize_config_module
    from transformers import AutoModelForCausalLM

    from evals.lm_verifier import step_probabilities
    from itc.candidates import sample_candidates
    from prm.evaluation import score_records
    from itc.policy import build_policy, resolve_model_path
    from itc.toy import generate, parse_problem
    from prm.data.toy import gold_records
    from prm.scoring import build_prm
    from prm.training import resolve_base

    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="eval_prm", overrides=[f"prm.model={args.prm_model}", "prm.backend=hf"])
    policy = build_policy(cfg.policy, seed=args.seed)
    problems = [p.to_problem() for p in generate(args.problems, args.seed, split="test")]
    texts = [[c.text for c in cs] for cs in sample_candidates(policy, problems, args.samples)]
    records = gold_records(problems, texts)
    policy.close()
    first_errors = [r.first_error() for r in records]
    kinds = [
        error_kind(parse_problem(r.problem), r.steps[:e], r.steps[e]) if e >= 0 else ""
        for r, e in zip(records, first_errors)
    ]
    prm_scores = score_records(build_prm(cfg.prm), records)
    lm = AutoModelForCausalLM.from_pretrained(resolve_model_path(resolve_base(args.lm))).eval()
    lm_scores = [step_probabilities(lm, policy, r)[0] for r in records]
    result = {
        "prm": args.prm_model,
        "lm": args.lm,
        "solutions": len(records),
        "prm_report": report(prm_scores, first_errors, kinds, [round(float(x), 3) for x in np.linspace(0.02, 0.98, 49)]),
        "lm_report": report(lm_scores, first_errors, kinds, [float(x) for x in np.exp(np.linspace(-12, 0, 200))]),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
