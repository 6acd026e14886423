"""Merge the shards of a run (``itc-run shard=I/K``) into one run for curves and reports.

The ``K`` shards of a run live in sibling folders that differ only in their suffix
``-shard<I>of<K>`` (configs/run.yaml). They are merged when every shard of ``0..K-1`` has
finished (its ``metrics.json``), all of them hold the same configuration but for the shard,
no problem appears in two shards, and together they hold every problem of the dataset; any
other case is an error that names the run and what is wrong.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from itc.errors import InputError
from itc.results import PLAN_FILE, ResultsStore, read_json, summarize
from itc.shard import parse_shard

_SUFFIX = re.compile(r"-shard\d+of\d+$")
# Metrics that depend on how the work was batched and timed, not on the results: wall time,
# and the tokens the engines computed (prefix-cache hits depend on which problems share a
# batch). A merged run equals the unsharded run in every other key of its metrics.json.
BATCH_DEPENDENT = (
    "wall_seconds", "prompt_tokens_computed", "prm_tokens_computed", "scoring_prm_tokens_computed",
    "policy_flops", "prm_flops", "flops_per_problem",
)
# keys of a run's identity that may differ between the shards of one run
_PER_SHARD = {"shard"}


def run_records(m: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's records: a merged run's, else its folder's ``results.jsonl``."""
    if "_merged_records" in m:
        return m["_merged_records"]
    return ResultsStore(Path(m["run_dir"])).records


def run_name(run_dir: str | Path) -> str:
    """The run a shard folder belongs to: its path without the shard suffix."""
    run_dir = Path(run_dir)
    return str(run_dir.with_name(_SUFFIX.sub("", run_dir.name)))


def merge_shards(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``metrics`` with the shards of each run replaced by one merged run (InputError when
    a run's shards cannot be merged)."""
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    out = []
    for m in metrics:
        if m.get("shard") is None:
            out.append(m)
        else:
            runs[run_name(m["run_dir"])].append(m)
    out += [merge_run(name, shards) for name, shards in sorted(runs.items())]
    return out


def merge_run(name: str, shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One run from the metrics of its shards (each with its ``run_dir``)."""
    from evals.curves import identity

    parsed = [parse_shard(m["shard"]) for m in shards]
    counts = sorted({s.count for s in parsed})
    if len(counts) > 1:
        raise InputError(f"{name}: its shards split the problems in different ways ({', '.join(f'K={k}' for k in counts)})")
    k = counts[0]
    by_index: dict[int, list[str]] = defaultdict(list)
    for s, m in zip(parsed, shards):
        by_index[s.index].append(m["run_dir"])
    twice = {i: dirs for i, dirs in by_index.items() if len(dirs) > 1}
    if twice:
        raise InputError(f"{name}: shard {min(twice)}/{k} appears twice: {', '.join(twice[min(twice)])}")
    missing = [f"{i}/{k}" for i in range(k) if i not in by_index]
    if missing:
        raise InputError(
            f"{name}: shard(s) {', '.join(missing)} missing or unfinished (no metrics.json); run "
            f"them (itc-run ... shard=I/K), or see itc-sweep-status"
        )
    first = {key: v for key, v in identity(shards[0]).items() if key not in _PER_SHARD}
    for m in shards[1:]:
        other = {key: v for key, v in identity(m).items() if key not in _PER_SHARD}
        diff = sorted(key for key in first.keys() | other.keys() if first.get(key) != other.get(key))
        if diff:
            raise InputError(
                f"{name}: shards {shards[0]['shard']} and {m['shard']} hold results of different "
                f"configurations (differ in: {', '.join(diff)}); they cannot be merged"
            )
    records: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    order: dict[str, int] = {}  # each problem's place in the dataset, as the shards recorded it
    for m in sorted(shards, key=lambda m: parse_shard(m["shard"]).index):
        plan = Path(m["run_dir"]) / PLAN_FILE
        order.update((read_json(plan).get("order") or {}) if plan.exists() else {})
        for r in ResultsStore(Path(m["run_dir"])).records:
            pid = str(r["problem_id"])
            if pid in seen:
                raise InputError(f"{name}: problem {pid!r} appears in shards {seen[pid]} and {m['shard']}")
            seen[pid] = m["shard"]
            records.append(r)
    totals = sorted({int(m.get("dataset_problems", -1)) for m in shards})
    if len(totals) > 1 or totals[0] != len(records):
        raise InputError(
            f"{name}: its {k} shards hold {len(records)} problems, the dataset has "
            f"{' or '.join(map(str, totals))}; a shard is incomplete or of another dataset"
        )
    # the unsharded run's order (its intervals are bootstrapped over the records in order)
    records.sort(key=lambda r: order.get(str(r["problem_id"]), len(order)))
    header = {key: shards[0].get(key) for key in ("strategy", "n", "policy", "dataset", "prm", "seed")}
    merged = summarize(records, **header)
    return {
        **merged,
        "run_dir": shards[0]["run_dir"],
        "shards": [m["run_dir"] for m in sorted(shards, key=lambda m: parse_shard(m["shard"]).index)],
        "_records": records,
        "_merged_records": records,
    }
