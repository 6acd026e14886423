"""Batched beam search against the same search run one problem at a time (the anchors' way).

    python benchmarks/beam_search_bench.py [--problems 64] [--n 16] [--beam-width 4]
                                           [--prm toy] [--seed 0] [--repeats 3] [OVERRIDE ...]

Embedded-world problems (held-out split, every level), the toy policy on vLLM and a PRM
(``--prm``: a configs/prm entry; ``toy`` is trained on first use, or pass
``--prm-model PATH`` for a checkpoint), both engines started and warmed up before timing.
Trailing Hydra overrides change the run config for both arms alike (for example
``policy.vllm.engine_kwargs.block_size=128``, vLLM's CPU default).
The same strategy object, configuration and seed run (1) on all problems in one call,
so each iteration is one vLLM generate call and one PRM call for every beam of every
problem, and (2) on one problem per call. The two arms alternate ``--repeats`` times, each
starting from empty prefix caches in both engines (so neither reuses the other's prompts),
and each arm's median wall time is reported: on a shared 2-core machine single timings
vary by a fifth. Prints accuracy, tokens and wall time of every run; the last line is a
JSON object with both median wall times and their ratio, and the time each arm spent
inside policy and PRM calls. The figures also go to the results log (``docs/results/``,
``itc.results_log``) unless ``--no-log``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from hydra import compose, initialize_config_module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--prm", default="toy", help="configs/prm entry (default: toy)")
    ap.add_argument("--prm-model", help="checkpoint path overriding the entry's model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each arm (median reported)")
    ap.add_argument("--no-log", action="store_true", help="print only; write no results-log entry")
    ap.add_argument(
        "overrides", nargs="*",
        help="Hydra overrides of the run config, e.g. policy.vllm.engine_kwargs.block_size=128",
    )
    args = ap.parse_args()

    from itc.grading import answers_equivalent
    from itc.policy import build_policy
    from itc.toy import generate
    from prm.scoring import build_prm
    from strategies.beam_search import BeamSearch

    overrides = [f"prm={args.prm}", f"seed={args.seed}", *args.overrides]
    if args.prm_model:
        overrides.append(f"prm.model={args.prm_model}")
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides)
    policy = build_policy(cfg.policy, seed=args.seed)
    prm = build_prm(cfg.prm, seed=args.seed)
    problems = [p.to_problem() for p in generate(args.problems, seed=args.seed)]
    strategy = BeamSearch(n=args.n, beam_width=args.beam_width)
    strategy.run(problems[:2], policy, prm)  # warm-up: engines compiled and caches filled
    inside = {"policy": 0.0, "prm": 0.0}  # seconds inside the policy's and the PRM's calls
    policy.generate = _clocked(policy.generate, inside, "policy")
    prm.score_with_usage = _clocked(prm.score_with_usage, inside, "prm")

    def timed(batches):
        for llm in (policy.llm, prm.llm):  # start cold: no prompt cached by an earlier run
            llm.reset_prefix_cache()
        inside.update(policy=0.0, prm=0.0)
        t0 = time.perf_counter()
        results = [r for batch in batches for r in strategy.run(batch, policy, prm)]
        seconds = time.perf_counter() - t0
        correct = sum(answers_equivalent(r.chosen_answer, p.answer) for r, p in zip(results, problems))
        return {
            "seconds": round(seconds, 2),
            "policy_seconds": round(inside["policy"], 2),
            "prm_seconds": round(inside["prm"], 2),
            "accuracy": round(correct / len(problems), 4),
            "completion_tokens": sum(r.completion_tokens for r in results),
            "prm_tokens": sum(r.prm_tokens for r in results),
        }

    runs: dict[str, list[dict]] = {"batched": [], "sequential": []}
    for k in range(args.repeats):
        runs["batched"].append(timed([problems]))
        print(f"run {k + 1}: batched    (1 call of {len(problems)} problems): {runs['batched'][-1]}", flush=True)
        runs["sequential"].append(timed([[p] for p in problems]))
        print(f"run {k + 1}: sequential ({len(problems)} calls of 1 problem): {runs['sequential'][-1]}", flush=True)
    batched, sequential = (statistics.median(r["seconds"] for r in runs[arm]) for arm in ("batched", "sequential"))
    summary = {
        "problems": len(problems),
        "n": args.n,
        "beam_width": args.beam_width,
        "repeats": args.repeats,
        "batched_seconds": batched,
        "sequential_seconds": sequential,
        # medians of the time inside policy and PRM calls (the rest is the search's own work)
        **{
            f"{arm}_{part}_seconds": statistics.median(r[f"{part}_seconds"] for r in runs[arm])
            for arm in ("batched", "sequential")
            for part in ("policy", "prm")
        },
        "speedup": round(sequential / batched, 2),
        "batched_accuracy": statistics.mean(r["accuracy"] for r in runs["batched"]),
        "sequential_accuracy": statistics.mean(r["accuracy"] for r in runs["sequential"]),
    }
    if not args.no_log:
        from itc.results_log import write_entry

        body = entry_body(summary, args.prm, args.overrides)
        print(f"results log: {write_entry('beam_search_bench: batched vs one problem per call', body)}")
    print(json.dumps(summary))


def entry_body(summary: dict, prm: str, overrides: list[str]) -> str:
    """The figures as a results-log body (Markdown): one row per arm."""
    s = summary
    return "\n".join(
        [
            f"Beam search (N={s['n']}, M={s['beam_width']}, PRM `{prm}`) on {s['problems']} problems, "
            f"median of {s['repeats']} alternating runs from cold prefix caches; seconds:",
            "",
            "| arm | wall | in policy calls | in PRM calls | accuracy |",
            "|---|---|---|---|---|",
            *(
                f"| {arm} | {s[f'{arm}_seconds']} | {s[f'{arm}_policy_seconds']} "
                f"| {s[f'{arm}_prm_seconds']} | {s[f'{arm}_accuracy']} |"
                for arm in ("batched", "sequential")
            ),
            "",
            f"Speed-up of one batched call over one call per problem: {s['speedup']}x.",
            *([f"Overrides: `{' '.join(overrides)}`."] if overrides else []),
        ]
    )


def _clocked(fn, totals: dict, key: str):
    """``fn``, adding the seconds spent in it to ``totals[key]``."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    return wrapper


if __name__ == "__main__":
    main()
