"""Smaller-N points drawn from one run at a larger N.

For strategies whose candidates are independent samples of the same distribution
(``majority``, ``best_of_n``), the first k of a run's N candidates are exactly a run at
k: one run at N=16 gives the points at 1, 2, 4 and 8 for the cost of the largest. This is
not valid for the search strategies (``beam_search``, ``dvts``, ``lookahead``, ``mcts``,
``self_reflection``): their candidates depend on each other and on N itself (what is kept
or pruned), so each N is its own run.

The selection and aggregation are those of the run (its ``run_config.json``); token counts
are the first k candidates' own, and PRM tokens and FLOPs are scaled to them.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from itc.results import CONFIG_FILE, ResultsStore, read_json, summarize
from itc.types import Candidate
from strategies.selection import select

# strategy name -> its default (selection, aggregation) when the run's config does not say
SUBSAMPLABLE = {"majority": ("majority", "min"), "best_of_n": ("weighted_majority", "min")}
_CANDIDATE_FIELDS = {f.name for f in fields(Candidate)}


def subsample_record(record: dict[str, Any], k: int, selection: str, aggregation: str) -> dict[str, Any]:
    """The result record a run at ``k`` would have written: the first ``k`` candidates."""
    cands = [Candidate(**{f: c[f] for f in _CANDIDATE_FIELDS if f in c}) for c in record["candidates"][:k]]
    n = max(1, len(record["candidates"]))
    chosen = select(cands, selection, aggregation) if selection != "majority" or cands else None
    completion = sum(c.completion_tokens for c in cands)
    policy_tokens = record.get("prompt_tokens", 0) + record.get("completion_tokens", 0)
    share = (record.get("prompt_tokens", 0) + completion) / max(1, policy_tokens)
    return {
        **record,
        "candidates": [c.to_dict() for c in cands],
        "chosen_index": chosen,
        "chosen_answer": None if chosen is None else cands[chosen].answer,
        "correct": chosen is not None and bool(cands[chosen].correct),
        "completion_tokens": completion,
        "prm_tokens": round(record.get("prm_tokens", 0) * len(cands) / n),
        "policy_flops": record.get("policy_flops", 0) * share,
        "prm_flops": record.get("prm_flops", 0) * len(cands) / n,
        "wall_seconds": record.get("wall_seconds", 0.0) * len(cands) / n,
    }


def subsampled_metrics(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Metrics at N = 1, 2, 4, ... below the run's N (empty for strategies where that is
    not valid). ``metrics`` is a run's metrics.json with its ``run_dir``."""
    strategy, n = metrics.get("strategy"), int(metrics.get("n", 1))
    if strategy not in SUBSAMPLABLE or n < 2:
        return []
    run_dir = Path(metrics["run_dir"])
    records = ResultsStore(run_dir).records
    config_path = run_dir / CONFIG_FILE
    config = (read_json(config_path).get("strategy") or {}) if config_path.exists() else {}
    selection = config.get("selection", SUBSAMPLABLE[strategy][0])
    aggregation = config.get("aggregation", SUBSAMPLABLE[strategy][1])
    header = {key: metrics.get(key) for key in ("strategy", "policy", "dataset", "seed")}
    out, k = [], 1
    while k < n:
        subs = [subsample_record(r, k, selection, aggregation) for r in records]
        out.append({**summarize(subs, **header, n=k), "subsampled_from": n, "run_dir": str(run_dir)})
        k *= 2
    return out
