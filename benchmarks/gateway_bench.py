"""The gateway under 64 concurrent clients against ``itc-run`` on the same problems.

    python benchmarks/gateway_bench.py [--problems 64] [--n 16] [--strategies best_of_n,beam_search]
                                       [--prm toy] [--seed 0] [--repeats 1] [--no-log] [OVERRIDE ...]

Embedded-world problems (held-out split, the first ``--problems``), the toy policy on vLLM
and a PRM (``--prm``, a configs/prm entry), both engines started once and shared by both
arms, and warmed up before timing. For each strategy, at budget ``--n``:

- ``itc-run``: the run loop (``itc.runner.run_experiment``, what ``itc-run`` calls) on the
  problems, in a temporary run folder: one batch, grading and records included;
- gateway: an in-process ``itc-gateway`` (uvicorn in a thread, the configured batch window
  and limits) on the same engines, sent every problem at once as one request each from the
  ``openai`` async client; wall time from the first request sent to the last answer, and
  each request's latency.

Each arm starts from empty prefix caches in both engines; the arms alternate ``--repeats``
times and the median wall times are reported. Reports wall times, their ratio
(``throughput_vs_itc_run``: itc-run's time over the gateway's; 1.0 is no overhead), p50 and p95 request latency, the number of
strategy batches the gateway ran and each arm's accuracy; the last line is JSON. The
figures go to the results log (``docs/results/``) unless ``--no-log``. Trailing Hydra
overrides apply to both arms (e.g. ``policy.vllm.gpu_memory_utilization=0.04``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time

from hydra import compose, initialize_config_module


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--strategies", default="best_of_n,beam_search")
    ap.add_argument("--prm", default="toy", help="configs/prm entry (default: toy)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each arm, alternating (median reported)")
    ap.add_argument("--no-log", action="store_true", help="print only; write no results-log entry")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for both arms")
    args = ap.parse_args()

    import openai
    import uvicorn

    from itc.cli.gateway import build_gateway
    from itc.cli.gateway_app import create_app
    from itc.data import load_problems
    from itc.grading import answers_equivalent
    from itc.policy import build_policy
    from itc.runner import run_experiment
    from prm.scoring import build_prm

    common = [f"prm={args.prm}", f"seed={args.seed}", f"n={args.n}", *args.overrides]
    strategies = args.strategies.split(",")
    with initialize_config_module(config_module="configs", version_base="1.3"):
        run_cfgs = {
            s: compose(config_name="run", overrides=[
                *common, f"strategy={s}", f"dataset.limit={args.problems}", f"batch_size={args.problems}"])
            for s in strategies
        }
        gw_cfg = compose(config_name="gateway", overrides=[*common, f"gateway.max_concurrent={args.problems}"])
    base = run_cfgs[strategies[0]]
    policy = build_policy(base.policy, seed=args.seed)
    prm = build_prm(base.prm, seed=args.seed)
    problems = load_problems(base.dataset)

    gateway = build_gateway(gw_cfg, policy=policy, prm=prm)
    server = uvicorn.Server(uvicorn.Config(create_app(gateway), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"

    def cold() -> None:
        for engine in (getattr(policy, "llm", None), getattr(prm, "llm", None)):
            if engine is not None:
                engine.reset_prefix_cache()

    async def clients(strategy: str, subset) -> tuple[float, list[float], list]:
        async with openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600) as client:
            async def one(p):
                t0 = time.perf_counter()
                r = await client.chat.completions.create(
                    model=f"itc/{strategy}@{args.n}", messages=[{"role": "user", "content": p.problem}])
                return time.perf_counter() - t0, r

            t0 = time.perf_counter()
            done = await asyncio.gather(*(one(p) for p in subset))
            return time.perf_counter() - t0, [d for d, _ in done], [r for _, r in done]

    rows = []
    for strategy in strategies:
        with tempfile.TemporaryDirectory() as tmp:  # warm-up: both paths, two problems
            run_experiment(compose_limit(run_cfgs[strategy], 2), tmp, policy=policy, prm=prm)
        asyncio.run(clients(strategy, problems[:2]))

        runs: dict[str, list] = {"itc_run": [], "gateway": []}
        for k in range(args.repeats):
            cold()
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                metrics = run_experiment(run_cfgs[strategy], tmp, policy=policy, prm=prm)
                runs["itc_run"].append((time.perf_counter() - t0, metrics["accuracy"]))
            cold()
            before = len(gateway.batcher.stats.batch_sizes)
            wall, latencies, responses = asyncio.run(clients(strategy, problems))
            sizes = gateway.batcher.stats.batch_sizes[before:]
            correct = sum(answers_equivalent(r.choices[0].itc["answer"], p.answer) for r, p in zip(responses, problems))
            runs["gateway"].append((wall, correct / len(problems), latencies, sizes))
            print(f"{strategy} run {k + 1}: itc-run {runs['itc_run'][-1][0]:.1f} s, gateway {wall:.1f} s "
                  f"(batches of {sizes})", flush=True)
        run_seconds = statistics.median(t for t, _ in runs["itc_run"])
        wall = statistics.median(r[0] for r in runs["gateway"])
        latencies = [x for r in runs["gateway"] for x in r[2]]
        row = {
            "strategy": strategy, "n": args.n, "problems": len(problems), "repeats": args.repeats,
            "itc_run_seconds": round(run_seconds, 2), "gateway_seconds": round(wall, 2),
            "throughput_vs_itc_run": round(run_seconds / wall, 3),
            "p50_seconds": round(statistics.median(latencies), 2),
            "p95_seconds": round(_percentile(latencies, 0.95), 2),
            "gateway_batches": " ".join("+".join(map(str, r[3])) for r in runs["gateway"]),
            "itc_run_accuracy": round(statistics.mean(a for _, a in runs["itc_run"]), 4),
            "gateway_accuracy": round(statistics.mean(r[1] for r in runs["gateway"]), 4),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    server.should_exit = True
    gateway.close()
    if not args.no_log:
        from itc.results_log import write_entry

        path = write_entry(f"gateway_bench: {len(problems)} concurrent requests vs itc-run", entry_body(rows, args))
        print(f"results log: {path}")
    print(json.dumps(rows))


def compose_limit(cfg, limit: int):
    """``cfg`` with ``dataset.limit`` and ``batch_size`` set to ``limit``."""
    cfg = cfg.copy()
    cfg.dataset.limit = limit
    cfg.batch_size = limit
    return cfg


def entry_body(rows: list[dict], args: argparse.Namespace) -> str:
    """The figures as a results-log body (Markdown): one row per strategy."""
    head = ["strategy", "n", "problems", "repeats", "itc_run_seconds", "gateway_seconds", "throughput_vs_itc_run",
            "p50_seconds", "p95_seconds", "gateway_batches", "itc_run_accuracy", "gateway_accuracy"]
    return "\n".join([
        (
            f"Toy policy on vLLM, PRM `{args.prm}`, seed {args.seed}; both arms on the same engines, each "
            "from empty prefix caches. The gateway arm sends every problem at once, one request each (openai "
            "async client); throughput_vs_itc_run = itc-run wall time / gateway wall time (target: at least "
            "0.8; itc-run's time includes grading and writing records; the arms sample with different seeds, "
            "since a request's seed key is its prompt's hash). Wall times: medians of `repeats` alternating "
            "runs on a shared machine; p50/p95 over every request of every run; gateway_batches: the batch "
            "sizes of each run."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows),
        *([f"\nOverrides: `{' '.join(args.overrides)}`."] if args.overrides else []),
    ])


if __name__ == "__main__":
    main()
