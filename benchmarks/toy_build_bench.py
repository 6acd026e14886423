"""Does the toy policy's recipe converge? Build it from several seeds under several caller
thread counts, each into its own empty cache, and evaluate every build.

    python benchmarks/toy_build_bench.py                      # seeds 0 1 2 x threads 1 2
    python benchmarks/toy_build_bench.py --seeds 0 1 --threads 1 --no-log
    python benchmarks/toy_build_bench.py --spec train_steps=2000   # a candidate recipe
    python benchmarks/toy_build_bench.py --jobs 2     # two builds side by side (one thread each)

Each build runs in a fresh process with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to the
caller thread count and its own empty ``ITC_CACHE_DIR`` (removed at the end), through
``itc.toy.build.policy_path``, the quality gate and its seed retries included. Each build is
then evaluated as ``itc-build-toy --evaluate`` does (vLLM, held-out problems): greedy pass@1
by level, and pass@1 and majority@N of N samples at the policy's temperature. A build with the
same weights (sha256) as one already evaluated shares that evaluation. The table goes to the
results log (``itc.results_log``) unless ``--no-log``; the last line printed is a JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

# The good solution (docs/results): a build whose greedy pass@1 reaches this on the 200
# evaluation problems has learned the arithmetic a weak build misses (weak builds: 0.61-0.69).
GOOD_GREEDY = 0.75


def parse_spec(items: list[str]) -> dict:
    """``key=value`` overrides of :class:`itc.toy.build.ToyPolicySpec` (values as JSON)."""
    from dataclasses import fields

    from itc.toy.build import ToyPolicySpec

    names = {f.name for f in fields(ToyPolicySpec)} - {"seed"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"--spec {item!r}: expected key=value with key in {', '.join(sorted(names))}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def child_build(seed: int, spec: dict) -> dict:
    """Build (gated) into this process's ``ITC_CACHE_DIR``; the build's info and path."""
    from itc.toy.build import BuildQualityError, ToyPolicySpec, policy_path

    if "levels" in spec:
        spec = {**spec, "levels": tuple(spec["levels"])}
    try:
        path = policy_path(ToyPolicySpec(**spec, seed=seed), progress=False)
    except BuildQualityError as e:
        return {"error": str(e)}
    return {"build_info": json.loads((path / "build_info.json").read_text()), "path": str(path)}


def child_evaluate(path: str, num_problems: int, n: int, temperature: float) -> dict:
    """``itc-build-toy --evaluate``'s evaluation, greedy and at ``temperature``."""
    from itc.cli.build_toy import evaluate

    greedy = evaluate(path, num_problems, 1, 0.0, 0)
    sampled = evaluate(path, num_problems, n, temperature, 0)
    return {"greedy": {"pass@1": greedy["pass@1"], "by_level": greedy["pass@1_by_level"]}, "sampled": sampled}


def run_child(flags: list[str], env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *flags], env=env, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-2000:]}"}
    return json.loads(lines[-1])


def build(seed: int, threads: int, root: str, args: argparse.Namespace) -> dict:
    """One build in a fresh process with its own empty cache, the caller's threads set."""
    cache = os.path.join(root, f"seed{seed}-threads{threads}")
    env = dict(os.environ, ITC_CACHE_DIR=cache, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return run_child(["--seeds", str(seed), *[f"--spec={item}" for item in args.spec]], env)


def table(rows: list[dict], n: int) -> str:
    head = (
        "| seed | caller threads | seed used | final loss | gate greedy (200) | greedy pass@1 | "
        f"greedy by level 1-5 | pass@1 (T) | majority@{n} | weights sha256 | good |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if "error" in r or "greedy" not in r:
            lines.append(f"| {r['seed']} | {r['threads']} | failed: {r.get('error', 'evaluation failed')[:300]} |||||||||")
            continue
        info, g, s = r["build_info"], r["greedy"], r["sampled"]
        levels = " / ".join(f"{v:.2f}" for v in g["by_level"].values())
        lines.append(
            f"| {r['seed']} | {r['threads']} | {info.get('seed_used', r['seed'])} | {info['final_loss']:.4f} | "
            f"{info['quality_gate']['greedy_pass@1']:.2f} | {g['pass@1']:.3f} | {levels} | "
            f"{s['pass@1']:.3f} | {s[f'majority@{n}']:.3f} | {info['weights_sha256'][:12]} | "
            f"{'yes' if r['good'] else 'NO'} |"
        )
    return head + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="caller thread counts")
    ap.add_argument("--num-problems", type=int, default=200)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--spec", action="append", default=[], metavar="KEY=VALUE", help="override a ToyPolicySpec field (repeatable)")
    ap.add_argument("--no-log", action="store_true", help="do not write a results-log entry")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=1, help="builds run side by side (default 1)")
    ap.add_argument("--evaluate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    try:
        spec = parse_spec(args.spec)
    except ValueError as e:
        ap.error(str(e))
    if args.child:
        if args.evaluate:
            result = child_evaluate(args.evaluate, args.num_problems, args.n, args.temperature)
        else:
            result = child_build(args.seeds[0], spec)
        print(json.dumps(result), flush=True)
        from itc.policy.vllm_backend import shutdown_engines

        shutdown_engines()
        os._exit(0)  # skip the interpreter's teardown, which can abort after an engine

    combos = [(seed, threads) for seed in args.seeds for threads in args.threads]
    with tempfile.TemporaryDirectory(prefix="itc-build-bench-") as root:
        with ThreadPoolExecutor(args.jobs) as pool:  # builds side by side, one thread each
            builds = list(pool.map(lambda c: build(*c, root, args), combos))
        evaluated: dict[str, dict] = {}  # weights sha256 -> evaluation, once per distinct model
        rows: list[dict] = []
        for (seed, threads), b in zip(combos, builds):
            row = {"seed": seed, "threads": threads, **b}
            if "error" not in b:
                sha = b["build_info"]["weights_sha256"]
                if sha not in evaluated:
                    env = dict(os.environ, VLLM_CACHE_ROOT=os.path.join(root, "vllm"))
                    flags = ["--evaluate", b["path"], "--num-problems", str(args.num_problems), "--n", str(args.n), "--temperature", str(args.temperature)]
                    evaluated[sha] = run_child(flags, env)
                row.update(evaluated[sha])
                row["good"] = "greedy" in row and row["greedy"]["pass@1"] >= GOOD_GREEDY
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "build_info"}), flush=True)
    text = table(rows, args.n)
    print(text)
    all_good = all(r.get("good") for r in rows)
    if not args.no_log:
        from itc.results_log import write_entry

        recipe = rows[0]["build_info"]["spec"] if "build_info" in rows[0] else spec
        body = (
            f"Toy policy builds from empty caches, seeds {args.seeds} x caller threads {args.threads}; "
            f"evaluated on {args.num_problems} held-out problems (greedy; {args.n} samples at T={args.temperature}). "
            f"Good = greedy pass@1 >= {GOOD_GREEDY}. Builds with the same weights (sha256) share one evaluation. "
            f"Every build good: {'yes' if all_good else 'NO'}.\n\n"
            f"Recipe: `{json.dumps(recipe)}`\n\n{text}"
        )
        print(f"results log: {write_entry('toy build benchmark', body)}")
    print(json.dumps({"all_good": all_good, "rows": rows}))


if __name__ == "__main__":
    main()
