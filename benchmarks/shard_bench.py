"""A sharded beam-search sweep through Hydra's Ray launcher against the same run in one process.

    python benchmarks/shard_bench.py [--shards 4] [--problems 16] [--n 8] [--parallel 2]
                                     [--address HOST:PORT] [--out DIR] [OVERRIDE ...]

Arm 1: ``itc-run strategy=beam_search prm=toy n=N dataset.limit=P`` (one process, Hydra's
basic launcher). Arm 2: ``itc-run -m hydra/launcher=ray shard=0/K,...,K-1/K`` with the same
settings, against a Ray head started here on 127.0.0.1 (or ``--address``), ``--parallel``
jobs at a time, one CPU each. Each arm is the real command in a fresh folder, timed from
start to exit. ``itc-curves``' merge of the K shards (evals/shards.py) is then compared
with the single run's metrics.json key by key: every key outside ``BATCH_DEPENDENT``
(wall time, tokens the engines computed) must be equal, and the records problem by problem.
Prints both wall times and their ratio; the last line is JSON. The figures also go to the
results log (docs/results/) unless ``--no-log``. Engines at gpu_memory_utilization=0.04.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ENGINES = ["policy.vllm.gpu_memory_utilization=0.04", "prm.vllm.gpu_memory_utilization=0.04"]
SAME = ("problem_id", "chosen_answer", "correct", "correct_by_selection", "candidates", "completion_tokens", "prm_tokens")


def run(args: list[str], cwd: Path) -> float:
    """``itc-run ARGS`` in ``cwd``; its wall time (raises on failure)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "itc.cli.run", *args], cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"itc-run {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--problems", type=int, default=16, help="dataset.limit (toy problems)")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2, help="Ray jobs at a time (hydra.sweeper.max_batch_size)")
    ap.add_argument("--address", help="an existing Ray cluster (default: a local head started here)")
    ap.add_argument("--out", help="working folder (default: a temporary one)")
    ap.add_argument("--no-log", action="store_true", help="print only; write no results-log entry")
    ap.add_argument("overrides", nargs="*", help="more itc-run overrides, for both arms")
    args = ap.parse_args()

    from evals.curves import collect_metrics
    from evals.shards import BATCH_DEPENDENT
    from itc.cli.launchers import local_ray_head
    from itc.results import read_json, read_results

    out = Path(args.out or tempfile.mkdtemp(prefix="shard-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    common = ["strategy=beam_search", "prm=toy", f"n={args.n}", f"dataset.limit={args.problems}", *ENGINES, *args.overrides]
    shards = ",".join(f"{i}/{args.shards}" for i in range(args.shards))

    whole_dir = out / "whole"
    load = [os.getloadavg()[0]]  # other work on the machine slows both arms
    single = run(["name=bench", f"hydra.run.dir={whole_dir}", *common], out)
    head = nullcontext(args.address) if args.address else local_ray_head(num_cpus=args.parallel)
    with head as address:
        ray_args = [
            "-m", "name=bench", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}",
            "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.remote.num_cpus=1",
            f"hydra.sweeper.max_batch_size={args.parallel}", f"shard={shards}", *common,
        ]
        load.append(os.getloadavg()[0])
        sharded = run(ray_args, out)
    load.append(os.getloadavg()[0])

    whole = read_json(whole_dir / "metrics.json")
    (merged,) = collect_metrics([out / "multirun" / "bench"])
    skip = {*BATCH_DEPENDENT, "run_dir", "shards"}
    keys = sorted(k for k in whole.keys() | merged.keys() if k not in skip and not k.startswith("_"))
    differ = [k for k in keys if whole.get(k) != merged.get(k)]
    same_records = [{k: r.get(k) for k in SAME} for r in read_results(whole_dir)] == [
        {k: r.get(k) for k in SAME} for r in merged["_records"]
    ]
    batch = {k: (whole.get(k), merged.get(k)) for k in BATCH_DEPENDENT if k != "wall_seconds"}
    result = {
        "shards": args.shards, "problems": whole["num_problems"], "n": args.n, "parallel": args.parallel,
        "accuracy_single": whole["accuracy"], "accuracy_merged": merged["accuracy"],
        "metrics_keys_compared": len(keys), "metrics_keys_differing": differ,
        "records_identical": same_records,
        "single_process_s": round(single, 1), "ray_sharded_s": round(sharded, 1),
        "ratio": round(sharded / single, 2), "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in load],
    }
    print(f"single process: {single:.1f} s; {args.shards} shards on Ray, {args.parallel} at a time: "
          f"{sharded:.1f} s ({sharded / single:.2f}x)")
    print(f"metrics.json: {len(keys) - len(differ)}/{len(keys)} keys equal outside {', '.join(BATCH_DEPENDENT)}; "
          f"records identical problem by problem: {same_records}")
    if not args.no_log:
        from itc.results_log import write_entry

        rows = "\n".join(f"| {k} | {a} | {b} |" for k, (a, b) in batch.items())
        body = (
            f"Beam search, prm=toy, n={args.n}, {whole['num_problems']} toy problems "
            f"(dataset.limit={args.problems}); every itc-run process starts its own engines "
            f"(gpu_memory_utilization 0.04 each).\n\n"
            f"| arm | wall time (s) | accuracy |\n|---|---|---|\n"
            f"| one process, basic launcher | {single:.1f} | {whole['accuracy']:.4f} |\n"
            f"| {args.shards} shards as Ray tasks, {args.parallel} at a time, 1 CPU each | {sharded:.1f} | {merged['accuracy']:.4f} |\n\n"
            f"Ratio sharded / single: {sharded / single:.2f}x on {os.cpu_count()} cores (no speed-up is "
            f"possible here: each job pays the engines' start-up, and the jobs share the cores). "
            f"Load average (1 min) before the single run, before the sharded sweep and at the end: "
            f"{', '.join(f'{x:.1f}' for x in load)}.\n\n"
            f"The merged shards (itc-curves' merge) against the single run's metrics.json: "
            f"{len(keys) - len(differ)} of {len(keys)} keys equal"
            + (f" (differing: {', '.join(differ)})" if differ else "")
            + f"; records identical problem by problem: {same_records}. Keys left out of the "
            f"comparison, as they depend on batching (prefix-cache hits) and timing:\n\n"
            f"| key | single | merged |\n|---|---|---|\n{rows}\n"
        )
        print(f"logged {write_entry('Sharded beam search on Ray vs one process', body)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
