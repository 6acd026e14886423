"""How often automatic (Math-Shepherd-style) labels agree with the embedded world's gold labels.

    python -m evals.autolabel_agreement --problems 100 --samples 4 --rollouts 8

Samples solutions from the toy policy (vLLM), labels every step by rolling out from its
prefix, and prints a JSON report (step-level agreement of hard labels, first-error agreement).
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4, help="solutions sampled per problem")
    parser.add_argument("--rollouts", type=int, default=8, help="completions per step prefix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from itc.candidates import sample_candidates
    from itc.policy import build_policy
    from itc.toy import generate, step_labels
    from prm.autolabel import agreement, rollout_labels

    cfg = {
        "name": "toy", "backend": "vllm", "model": "toy", "dtype": "float32", "max_model_len": 1024,
        "sampling": {"temperature": 0.8, "max_tokens": 160},
        "vllm": {"gpu_memory_utilization": 0.2},
    }
    policy = build_policy(cfg, seed=args.seed)
    problems = [p.to_problem() for p in generate(args.problems, seed=args.seed + 1000)]
    sampled = sample_candidates(policy, problems, args.samples)
    solutions = [[c.steps or ["(empty)"] for c in cs] for cs in sampled]
    records = rollout_labels(policy, problems, solutions, n=args.rollouts)
    gold = [step_labels(p.problem, steps) for p, sols in zip(problems, solutions) for steps in sols]
    report = agreement(records, gold)
    report.update(problems=args.problems, samples=args.samples, rollouts=args.rollouts)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
