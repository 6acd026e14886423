"""Beam search on long chains: a TTT policy forking its state against a transformer's KV caches.

    python benchmarks/ttt_search_bench.py [--lengths 8,16,32,64] [--n 8] [--beam-width 4]
                                          [--steps S] [--threads 1] [--no-log]

PRM beam search (``strategies.beam_search``, N beams, one step per iteration) on one held-out
long-chain problem per chain length, run for as many iterations as the chain has operations,
so the beams' prefixes grow to the length of a whole solution (a problem stops earlier once N
of its beams have finished: a policy that answers before the chain's end ends it sooner, so
the table gives the iterations run and the longest prefix reached). Arms, all on the transformers
backend (``HFPolicy``) with its prefix cache (``hf.prefix_cache_mib``):

* ``ttt``: TTT-Linear (the long-chain recipe's Mamba backbone); a beam continues from a copy of
  its prefix's constant-size state;
* ``ttt-prefill``: the same model without the prefix cache: every beam computes its whole
  prefix again at every step (what forking saves);
* ``gpt2``: GPT-2 of matched parameter count; a beam continues from its prefix's KV cache,
  which grows with the prefix.

The policies are the long-chain recipe's (``itc.toy.long_chain.TOY_TTT`` and its GPT-2; trained
first if not cached; ``--steps`` trains them shorter, enough for the steps' format, which is
all a cost measurement needs). The PRM is a seeded random scorer, so only the policy's cost
is timed. Per chain length and arm: wall time per iteration (mean over
all iterations and over the last quarter, where prefixes are longest), prompt tokens computed
per iteration, the cache kept per beam at the last iteration and the prefix cache's total.
Prints a table and a JSON line; writes a results-log entry unless ``--no-log``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from itc.policy import PromptConfig, SamplingConfig
from itc.policy.hf_backend import HFPolicy
from itc.toy import long_chain, task
from strategies.beam_search import BeamSearch

ARMS = ("ttt", "ttt-prefill", "gpt2")


class RandomPRM:
    """Seeded random step scores at no cost (the policy's cost is what is measured)."""

    aggregation = "last"
    num_parameters = 0

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def aggregate(self, step_scores: Sequence[float]) -> float:
        from prm.scoring import aggregate

        return aggregate(step_scores, self.aggregation)

    def score_with_usage(self, problems, candidates, known=None):
        known = known or [[0] * len(cands) for cands in candidates]
        scores = [
            [[self.rng.random() for _ in steps[k:]] for steps, k in zip(cands, ks)]
            for cands, ks in zip(candidates, known)
        ]
        return scores, [0 for _ in candidates]


def run_arm(
    arm: str, model_dir: Path, problem: task.ToyProblem, args: argparse.Namespace, max_len: int
) -> dict:
    cache_mib = 0 if arm == "ttt-prefill" else 4096
    policy = HFPolicy(
        arm, str(model_dir), PromptConfig(),
        SamplingConfig(temperature=1.0, max_tokens=args.step_tokens, max_step_tokens=args.step_tokens),
        dtype="float32", max_model_len=max_len, seed=args.seed, device="cpu",
        prefix_cache_mib=cache_mib,
    )
    times: list[float] = []
    computed: list[int] = []
    generate = policy.generate

    def timed(*a, **kw):
        t0 = time.perf_counter()
        out = generate(*a, **kw)
        times.append(time.perf_counter() - t0)
        computed.append(sum(c.prompt_tokens_computed or 0 for row in out for c in row))
        return out

    policy.generate = timed  # one call per beam-search iteration
    search = BeamSearch(n=args.n, beam_width=args.beam_width, max_steps=len(problem.ops))
    t0 = time.perf_counter()
    result = search.run([problem.to_problem()], policy, RandomPRM(args.seed))[0]
    wall = time.perf_counter() - t0
    last = max(1, len(times) // 4)
    cache = policy.prefix_cache
    longest = max(cache.entries, key=len) if cache.entries else ()
    return {
        "iterations": len(times),
        "wall_seconds": round(wall, 3),
        "step_seconds": round(sum(times) / len(times), 4),
        "step_seconds_last_quarter": round(sum(times[-last:]) / last, 4),
        "step_seconds_first_quarter": round(sum(times[:last]) / last, 4),
        "prompt_tokens_computed_per_step": round(sum(computed) / len(computed), 1),
        "final_prefix_tokens": len(longest) + 1 if longest else None,
        "cache_bytes_per_beam": cache.size(cache.entries[longest]) if longest else 0,
        "prefix_cache_bytes": cache.nbytes,
        "completion_tokens": result.completion_tokens,
    }


def entry_body(report: dict) -> str:
    lines = [
        (
            f"Beam search N={report['n']} (beam width {report['beam_width']}), one held-out "
            f"long-chain problem per length, one iteration per operation, steps of at most "
            f"{report['step_tokens']} tokens, the long-chain policies ({report['train_steps']} "
            f"training steps), {report['threads']} torch thread(s); random PRM (policy cost only)."
        ),
        "",
        "| ops | arm | iterations | s/step (all) | s/step (first 1/4) | s/step (last 1/4) | prompt tokens computed/step | cache per beam (KiB) | longest prefix |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for length, arms in report["by_length"].items():
        for arm, r in arms.items():
            lines.append(
                f"| {length} | {arm} | {r['iterations']} | {r['step_seconds']:.4f} | {r['step_seconds_first_quarter']:.4f} "
                f"| {r['step_seconds_last_quarter']:.4f} | {r['prompt_tokens_computed_per_step']:.0f} "
                f"| {r['cache_bytes_per_beam'] / 1024:.1f} | {r['final_prefix_tokens']} |"
            )
    lines += ["", "```json", json.dumps(report, indent=1), "```"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="8,16,32,64", help="chain lengths (default 8,16,32,64)")
    ap.add_argument("--n", type=int, default=8, help="beams (default 8)")
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--step-tokens", type=int, default=16, help="most tokens per step (default 16)")
    ap.add_argument("--steps", type=int, help="training steps of the policies (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-log", action="store_true", help="do not write a results-log entry")
    args = ap.parse_args(argv)
    try:
        lengths = [int(x) for x in args.lengths.split(",")]
    except ValueError:
        ap.error(f"--lengths: expected comma-separated integers, got {args.lengths!r}")
    torch.set_num_threads(args.threads)
    spec = long_chain.TOY_TTT
    if args.steps:
        spec = replace(spec, train_steps=args.steps)
    max_len = spec.max_positions
    dirs = {arch: long_chain.policy_path(arch, spec) for arch in ("ttt", "gpt2")}
    report: dict = {
        "n": args.n, "beam_width": args.beam_width, "step_tokens": args.step_tokens,
        "train_steps": spec.train_steps, "threads": args.threads, "by_length": {},
        "models": {arch: str(d) for arch, d in dirs.items()},
    }
    for length in lengths:
        problem = task.generate(1, seed=args.seed, levels=(1,), split="test", long_chain_steps=length)[0]
        report["by_length"][str(length)] = {
            arm: run_arm(arm, dirs[arm.split("-")[0]], problem, args, max_len) for arm in ARMS
        }
        print(json.dumps({length: report["by_length"][str(length)]}), flush=True)
    body = entry_body(report)
    print(body.split("```json")[0])
    if not args.no_log:
        from itc.results_log import write_entry

        print(f"results log: {write_entry('TTT beam search against chain length', body)}")
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
