"""``itc-build-toy``: build the embedded world's policy (cached) and report how it does.

    itc-build-toy                 # build if missing, print the cached path
    itc-build-toy --evaluate      # also sample held-out problems with vLLM and report
                                  # pass@1 by level and majority@N over the same samples
    itc-build-toy --architecture qwen2 --evaluate   # the same with a RoPE (Qwen2) backbone
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from itc.cli.errors import cli_errors, pop_debug_flag
from itc.cli.lifecycle import command_process


def evaluate(model_path: str, num_problems: int, n: int, temperature: float, seed: int) -> dict:
    from itc.candidates import majority_is_right, sample_candidates
    from itc.grading import answers_equivalent
    from itc.policy import PromptConfig, SamplingConfig
    from itc.policy.vllm_backend import VLLMPolicy
    from itc.toy import generate

    policy = VLLMPolicy(
        "toy", model_path, PromptConfig(), SamplingConfig(temperature=temperature, max_tokens=160),
        dtype="float32", max_model_len=1024, seed=seed, gpu_memory_utilization=0.2,
    )
    problems = [p.to_problem() for p in generate(num_problems, seed)]
    pass1, maj, tokens = defaultdict(list), defaultdict(list), 0
    for problem, cands in zip(problems, sample_candidates(policy, problems, n)):
        ok = [answers_equivalent(c.answer, problem.answer) for c in cands]
        pass1[problem.level].append(sum(ok) / n)
        maj[problem.level].append(majority_is_right(cands, ok))
        tokens += sum(c.completion_tokens for c in cands)
    mean = lambda d: sum(sum(v) for v in d.values()) / sum(len(v) for v in d.values())  # noqa: E731
    return {
        "num_problems": len(problems),
        "n": n,
        "temperature": temperature,
        "pass@1": round(mean(pass1), 4),
        f"majority@{n}": round(mean(maj), 4),
        "pass@1_by_level": {k: round(sum(v) / len(v), 4) for k, v in sorted(pass1.items())},
        f"majority@{n}_by_level": {k: round(sum(v) / len(v), 4) for k, v in sorted(maj.items())},
        "completion_tokens_per_sample": round(tokens / (n * len(problems)), 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="itc-build-toy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", action="store_true", help="sample held-out problems and report accuracy")
    parser.add_argument("--num-problems", type=int, default=200)
    parser.add_argument("--n", type=int, default=16, help="samples per problem (default 16)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--architecture", choices=["gpt2", "qwen2"], default="gpt2",
        help="backbone of the toy policy (default gpt2, the one every config uses)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    pop_debug_flag(["", "--debug"] if args.debug else [""])  # or HYDRA_FULL_ERROR=1
    with command_process(), cli_errors("itc-build-toy"):  # engines shut down, then exit
        _build(args)


def _build(args: argparse.Namespace) -> None:
    from itc.toy.build import ToyPolicySpec, policy_path

    path = policy_path(ToyPolicySpec(architecture=args.architecture))
    info = json.loads((path / "build_info.json").read_text())
    print(f"toy policy: {path} ({info['parameters']:,} parameters, trained in {info['train_seconds']} s)")
    if "quality_gate" in info:
        gate = info["quality_gate"]
        print(f"quality gate: {gate['metric']} {gate['greedy_pass@1']:.3f} (floor {gate['floor']}), seed {info['seed_used']}")
    if args.evaluate:
        report = evaluate(str(path), args.num_problems, args.n, args.temperature, args.seed)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
