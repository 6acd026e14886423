"""Engine settings of the embedded world, side by side: start-up time and work time.

    python benchmarks/engine_bench.py prm       # the toy PRM as shipped, compiled, on one core
    python benchmarks/engine_bench.py policy    # the toy policy as shipped, eager, with AOT
                                                # compilation: first and second start, sampling

Each variant runs in a fresh process (an engine's start-up is what is measured) with an
empty vLLM cache (``VLLM_CACHE_ROOT``), as on a fresh machine, one after the other.
``prm``: seconds to start the engine of ``configs/prm/toy.yaml`` and to score
3,200 reference solutions of held-out problems (the PRM work of best-of-16 on 200 problems),
median of 2 passes with an emptied prefix cache. ``policy``: seconds to start the toy policy's
engine twice in a row, so the second start can reuse what the first compiled, and to sample
16 solutions to each of 200 held-out problems (majority@16's work in the demo) after the
second start. The last line is a JSON object with every figure; the figures also go to the
results log (``docs/results/``, ``itc.results_log``) unless ``--no-log``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from itc.results_log import write_entry

PRM_VARIANTS = {
    "shipped": [],
    "compiled": ["prm.vllm.enforce_eager=false"],
    "one_core": ["prm.vllm.env={}"],
}
POLICY_VARIANTS = {
    "shipped": [],
    "eager": ["policy.vllm.enforce_eager=true"],
    "aot_compile": ["policy.vllm.env={VLLM_USE_AOT_COMPILE:1}"],
}


def _config(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="run", overrides=["prm=toy", *overrides])


def child_prm(overrides: list[str]) -> dict:
    from itc.toy import generate
    from prm.scoring import build_prm

    cfg = _config(overrides)
    t0 = time.perf_counter()
    prm = build_prm(cfg.prm)
    start = time.perf_counter() - t0
    problems = generate(200, seed=1)
    texts = [p.text for p in problems]
    candidates = [[p.solution.split("\n\n")] * 16 for p in problems]
    passes = []
    for _ in range(2):
        prm.llm.reset_prefix_cache()
        t0 = time.perf_counter()
        prm.score(texts, candidates)
        passes.append(time.perf_counter() - t0)
    return {"start_seconds": round(start, 1), "score_seconds": round(statistics.median(passes), 1)}


def child_policy(overrides: list[str], sample: bool) -> dict:
    from itc.policy import build_policy
    from itc.toy import generate

    cfg = _config(overrides)
    t0 = time.perf_counter()
    policy = build_policy(cfg.policy)
    out = {"start_seconds": round(time.perf_counter() - t0, 1)}
    if sample:
        prompts = [policy.format_prompt(p.text) for p in generate(200, seed=1)]
        t0 = time.perf_counter()
        policy.generate(prompts, n=16)
        out["sample_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run_child(engine: str, overrides: list[str], env: dict[str, str], *flags: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *flags, engine, *overrides],
        env=env, capture_output=True, text=True, check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} variant {overrides} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])


def entry_body(engine: str, report: dict[str, dict], variants: dict[str, list[str]]) -> str:
    """The figures as a results-log body (Markdown): one row per variant."""
    columns = list(next(iter(report.values())))
    return "\n".join(
        [
            f"Toy {engine} engine, seconds, each variant from an empty vLLM cache:",
            "",
            "| variant | overrides | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns),
            *(
                f"| {name} | {' '.join(f'`{o}`' for o in variants[name]) or '(as shipped)'} | "
                + " | ".join(str(figures[c]) for c in columns) + " |"
                for name, figures in report.items()
            ),
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", choices=["prm", "policy"])
    ap.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sample", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-log", action="store_true", help="print only; write no results-log entry")
    args = ap.parse_args()
    if args.child:
        if args.engine == "prm":
            result = child_prm(args.overrides)
        else:
            result = child_policy(args.overrides, sample=args.sample)
        print(json.dumps(result), flush=True)
        from itc.policy.vllm_backend import shutdown_engines

        shutdown_engines()  # stop the engine's processes, which hold this process's output open
        os._exit(0)  # then skip the interpreter's teardown, which can abort after an engine
    report: dict[str, dict] = {}
    variants = PRM_VARIANTS if args.engine == "prm" else POLICY_VARIANTS
    for name, overrides in variants.items():
        with tempfile.TemporaryDirectory() as cache:  # an empty compile cache, as on a fresh machine
            env = dict(os.environ, VLLM_CACHE_ROOT=cache)
            if args.engine == "prm":
                report[name] = run_child("prm", overrides, env)
            else:
                first = run_child("policy", overrides, env)
                second = run_child("policy", overrides, env, "--sample")
                report[name] = {
                    "first_start_seconds": first["start_seconds"],
                    "second_start_seconds": second["start_seconds"],
                    "sample_seconds": second["sample_seconds"],
                }
        print(f"{name}: {report[name]}", flush=True)
    if not args.no_log:
        body = entry_body(args.engine, report, variants)
        print(f"results log: {write_entry(f'engine_bench {args.engine}', body)}")
    print(json.dumps({"engine": args.engine, **report}))


if __name__ == "__main__":
    main()
