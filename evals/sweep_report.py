"""Accuracy and computed tokens of every run of a sweep, with seeded bootstrap 95% intervals.

``python -m evals.sweep_report multirun/<name> [--log TITLE]`` prints one row per run (its
strategy label, as itc-curves labels lines, and N): accuracy, policy tokens computed per
problem (prompt tokens not read from the prefix cache plus completion tokens) and PRM
tokens computed per problem, each with a 95% percentile-bootstrap interval over problems
(``--resamples`` draws, ``--seed``), and what the adaptive strategies record: the samples
adaptive_majority used per problem, the traces DeepConf stopped. ``--log`` writes the table
to the results log (docs/results/). ``make sweep-new`` runs it after its sweep.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from evals.curves import collect_metrics, labels, markdown_table
from evals.shards import run_records
from itc.errors import InputError

PROG = "python -m evals.sweep_report"


def bootstrap(values: np.ndarray, rng: np.random.Generator, resamples: int) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the mean over problems drawn with replacement."""
    if len(values) == 0:
        return float("nan"), float("nan")
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def run_row(label: str, n: int, records: list[dict[str, Any]], rng: np.random.Generator, resamples: int) -> dict[str, Any]:
    """One run's figures, from its result records."""
    correct = np.array([bool(r["correct"]) for r in records], dtype=float)
    policy = np.array([r["prompt_tokens_computed"] + r["completion_tokens"] for r in records], dtype=float)
    prm = np.array([r["prm_tokens_computed"] for r in records], dtype=float)
    row: dict[str, Any] = {"strategy": label, "n": n, "problems": len(records)}
    for name, values, digits in (("accuracy", correct, 3), ("policy_tokens", policy, 0), ("prm_tokens", prm, 0)):
        lo, hi = bootstrap(values, rng, resamples)
        mean = float(values.mean()) if len(values) else float("nan")
        row[name] = round(mean, digits) if digits else round(mean)
        row[f"{name}_95ci"] = f"[{lo:.{digits}f}, {hi:.{digits}f}]"
    metas = [r.get("meta") or {} for r in records]
    samples = [m["samples"] for m in metas if "samples" in m]
    row["samples_used"] = round(float(np.mean(samples)), 1) if samples else None
    stopped = [m["stopped"] for m in metas if "stopped" in m]
    row["traces_stopped"] = round(float(np.mean(stopped)), 2) if stopped else None
    return row


def report(dirs: list[str], seed: int = 0, resamples: int = 2000) -> list[dict[str, Any]]:
    """A row per run under ``dirs``, sorted by label and N."""
    metrics = collect_metrics(dirs)
    rng = np.random.default_rng(seed)
    rows = []
    for m, label in sorted(zip(metrics, labels(metrics)), key=lambda x: (x[1], int(x[0]["n"]))):
        records = run_records(m)
        rows.append(run_row(label, int(m["n"]), records, rng, resamples))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="sweep or run folders (multirun/<name>)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap draws")
    parser.add_argument("--log", metavar="TITLE", help="also write the table to the results log under this title")
    parser.add_argument("--about", metavar="TEXT", default="", help="what made the runs (the sweep's commands), for the log")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be at least 1")
    try:
        rows = report(args.dirs, args.seed, args.resamples)
    except (FileNotFoundError, InputError) as e:
        parser.exit(2, f"{PROG}: error: {e}\n")
    table = markdown_table(rows)
    print(table)
    if args.log:
        from itc.results_log import write_entry

        about = f"{args.about}\n\n" if args.about else ""
        body = about + (
            f"Runs: {', '.join(args.dirs)}. Accuracy under each run's own selection rule; policy tokens: prompt "
            "tokens computed (not read from the prefix cache) plus completion tokens, per problem; PRM tokens: "
            f"computed, per problem. 95% intervals: percentile bootstrap over problems, {args.resamples} draws, "
            f"seed {args.seed}.\n\n" + table
        )
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        print(f"logged {write_entry(args.log, body, command=f'{PROG} {argv_text}')}")


if __name__ == "__main__":
    main()
