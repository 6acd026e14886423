"""``itc-build-toy``: build the embedded world's policy (cached) and report how it does.

    itc-build-toy                 # build if missing, print the cached path
    itc-build-toy --evaluate      # also sample held-out problems with vLLM and report
                                  # pass@1 by level and majority@N over the same samples
    itc-build-toy --architecture qwen2 --evaluate   # the same with a RoPE (Qwen2) backbone
    itc-build-toy --evaluate --temperatures 0.6,0.8,1.0,1.2   # the sampling temperature sweep
                                  # (logged to docs/results/)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from collections import defaultdict

from itc.cli.errors import cli_errors, pop_debug_flag
from itc.cli.lifecycle import command_process


def evaluate(model_path: str, num_problems: int, n: int, temperature: float, seed: int, policy=None) -> dict:
    """Sample ``n`` solutions per held-out problem at ``temperature`` and report pass@1,
    majority@n and pass@n (coverage), by level, and how many distinct wrong answers a problem's
    samples give (scattered mistakes are what voting cancels)."""
    from itc.candidates import majority_is_right, sample_candidates
    from itc.grading import answers_equivalent
    from itc.toy import generate

    policy = policy or _policy(model_path, seed)
    problems = [p.to_problem() for p in generate(num_problems, seed)]
    pass1, maj, cover, tokens, wrong = defaultdict(list), defaultdict(list), defaultdict(list), 0, []
    for problem, cands in zip(problems, sample_candidates(policy, problems, n, temperature=temperature)):
        ok = [answers_equivalent(c.answer, problem.answer) for c in cands]
        pass1[problem.level].append(sum(ok) / n)
        cover[problem.level].append(any(ok))
        maj[problem.level].append(majority_is_right(cands, ok))
        wrong.append(len({c.answer for c, right in zip(cands, ok) if not right}))
        tokens += sum(c.completion_tokens for c in cands)
    mean = lambda d: sum(sum(v) for v in d.values()) / sum(len(v) for v in d.values())  # noqa: E731
    by_level = lambda d: {k: round(sum(v) / len(v), 4) for k, v in sorted(d.items())}  # noqa: E731
    return {
        "num_problems": len(problems),
        "n": n,
        "temperature": temperature,
        "pass@1": round(mean(pass1), 4),
        f"majority@{n}": round(mean(maj), 4),
        f"pass@{n}": round(mean(cover), 4),
        "distinct_wrong_answers_per_problem": round(sum(wrong) / len(wrong), 2),
        "pass@1_by_level": by_level(pass1),
        f"majority@{n}_by_level": by_level(maj),
        "completion_tokens_per_sample": round(tokens / (n * len(problems)), 1),
    }


def _policy(model_path: str, seed: int):
    from itc.policy import PromptConfig, SamplingConfig
    from itc.policy.vllm_backend import VLLMPolicy

    return VLLMPolicy(
        "toy", model_path, PromptConfig(), SamplingConfig(temperature=1.0, max_tokens=160),
        dtype="float32", max_model_len=1024, seed=seed, gpu_memory_utilization=0.2,
        engine_kwargs={"enable_chunked_prefill": False},  # seeded requests on CPU: configs/policy/toy.yaml
    )


def temperature_sweep(model_path: str, num_problems: int, n: int, temperatures: list[float], seed: int) -> str:
    """Greedy pass@1, then pass@1, majority@n and pass@n at each temperature, on the same
    problems with one engine: a Markdown table."""
    policy = _policy(model_path, seed)
    greedy = evaluate(model_path, num_problems, 1, 0.0, seed, policy)
    rows = [evaluate(model_path, num_problems, n, t, seed, policy) for t in temperatures]
    lines = [
        f"Greedy pass@1: {greedy['pass@1']:.3f} (by level: "
        + " / ".join(f"{v:.2f}" for v in greedy["pass@1_by_level"].values()) + ").\n",
        f"| temperature | pass@1 | majority@{n} | pass@{n} | majority@{n} - greedy (points) | distinct wrong answers per problem | majority@{n} by level |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['temperature']:g} | {r['pass@1']:.3f} | {r[f'majority@{n}']:.3f} | {r[f'pass@{n}']:.3f} | "
            f"{100 * (r[f'majority@{n}'] - greedy['pass@1']):+.1f} | {r['distinct_wrong_answers_per_problem']:.2f} | "
            + " / ".join(f"{v:.2f}" for v in r[f"majority@{n}_by_level"].values()) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="itc-build-toy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--evaluate", action="store_true", help="sample held-out problems and report accuracy")
    parser.add_argument("--num-problems", type=int, default=200)
    parser.add_argument("--n", type=int, default=16, help="samples per problem (default 16)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument(
        "--temperatures", type=lambda v: [float(t) for t in v.split(",")], metavar="T1,T2,...",
        help="with --evaluate: sweep these temperatures (greedy too) and log the table to docs/results/",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--architecture", choices=["gpt2", "qwen2"], default="gpt2",
        help="backbone of the toy policy (default gpt2, the one every config uses)",
    )
    parser.add_argument(
        "--prm-base", action="store_true",
        help="build the toy PRM's base LM (toy-qwen2) instead; make demo runs both builds side by side",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    pop_debug_flag(["", "--debug"] if args.debug else [""])  # or HYDRA_FULL_ERROR=1
    with command_process(), cli_errors("itc-build-toy"):  # engines shut down, then exit
        _build(args)


def _build(args: argparse.Namespace) -> None:
    from itc.toy.build import ToyPolicySpec, policy_path

    if args.prm_base:
        from prm.training import resolve_base

        path = Path(resolve_base("toy-qwen2"))
    else:
        path = policy_path(ToyPolicySpec(architecture=args.architecture))
    info = json.loads((path / "build_info.json").read_text())
    print(f"toy {'PRM base LM' if args.prm_base else 'policy'}: {path} ({info['parameters']:,} parameters, trained in {info['train_seconds']} s)")
    if "quality_gate" in info:
        gate = info["quality_gate"]
        print(f"quality gate: {gate['metric']} {gate['greedy_pass@1']:.3f} (floor {gate['floor']}), seed {info['seed_used']}")
    if args.evaluate and args.temperatures:
        from itc.results_log import write_entry

        table = temperature_sweep(str(path), args.num_problems, args.n, args.temperatures, args.seed)
        print(table)
        body = f"Toy policy `{path.name}` on {args.num_problems} held-out problems (seed {args.seed}), {args.n} samples per problem.\n\n{table}"
        print(f"results log: {write_entry('toy policy temperature sweep', body)}")
    elif args.evaluate:
        report = evaluate(str(path), args.num_problems, args.n, args.temperature, args.seed)
        print(json.dumps(report))


if __name__ == "__main__":
    main()
