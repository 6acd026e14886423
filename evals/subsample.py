"""Smaller-N points drawn from one run at a larger N.

For strategies whose candidates are independent samples of the same distribution
(``majority``, ``best_of_n``), the first k of a run's N candidates are exactly a run at
k: one run at N=16 gives the points at 1, 2, 4 and 8 for the cost of the largest. This is
not valid for the search strategies (``beam_search``, ``dvts``, ``lookahead``, ``mcts``,
``self_reflection``): their candidates depend on each other and on N itself (what is kept
or pruned), so each N is its own run.

The selection rule is the run's (the records' ``selection``) unless one is asked for; every
rule the run recorded is recomputed on the first k candidates. Completion tokens are the
first k candidates' own; prompt and PRM tokens and FLOPs are scaled to them.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from evals.shards import run_records
from itc.results import CONFIG_FILE, read_json, summarize
from itc.types import Candidate
from strategies.selection import rule_name, select_all, select_rule

# strategy name -> its default selection rule when the run's records do not say (old runs)
SUBSAMPLABLE = {"majority": "majority", "best_of_n": "weighted_majority/min"}
_CANDIDATE_FIELDS = {f.name for f in fields(Candidate)}


def candidates_of(record: dict[str, Any]) -> list[Candidate]:
    return [Candidate(**{f: c[f] for f in _CANDIDATE_FIELDS if f in c}) for c in record["candidates"]]


def subsample_record(record: dict[str, Any], k: int, rule: str) -> dict[str, Any]:
    """The result record a run at ``k`` would have written: the first ``k`` candidates,
    chosen by ``rule`` (``majority``, ``highest/last``, ...)."""
    cands = candidates_of(record)[:k]
    n = max(1, len(record["candidates"]))
    chosen = select_rule(cands, rule)
    completion = sum(c.completion_tokens for c in cands)
    policy_tokens = record.get("prompt_tokens", 0) + record.get("completion_tokens", 0)
    share = (record.get("prompt_tokens", 0) + completion) / max(1, policy_tokens)
    scaled = {
        key: round(record[key] * len(cands) / n)
        for key in ("prompt_tokens_computed", "prm_tokens", "prm_tokens_computed") if key in record
    }
    return {
        **record,
        **scaled,
        "candidates": [c.to_dict() for c in cands],
        "chosen_index": chosen,
        "chosen_answer": None if chosen is None else cands[chosen].answer,
        "correct": chosen is not None and bool(cands[chosen].correct),
        "selection": rule,
        "correct_by_selection": {r: i is not None and bool(cands[i].correct) for r, i in select_all(cands).items()},
        "completion_tokens": completion,
        "policy_flops": record.get("policy_flops", 0) * share,
        "prm_flops": record.get("prm_flops", 0) * len(cands) / n,
        "wall_seconds": record.get("wall_seconds", 0.0) * len(cands) / n,
    }


def run_rule(records: list[dict[str, Any]], run_dir: Path, strategy: str) -> str:
    """The run's configured selection rule: from its records, else (runs written before the
    records said) from its ``run_config.json``."""
    if records and records[0].get("selection"):
        return records[0]["selection"]
    path = run_dir / CONFIG_FILE
    config = read_json(path) if path.exists() else {}
    strat, prm = config.get("strategy") or {}, config.get("prm") or {}
    if "selection" in strat:
        return rule_name(strat["selection"], strat.get("aggregation") or prm.get("aggregation") or "min")
    return SUBSAMPLABLE.get(strategy, "majority")


def subsampled_metrics(metrics: dict[str, Any], rule: str | None = None) -> list[dict[str, Any]]:
    """Metrics at N = 1, 2, 4, ... below the run's N (empty for strategies where that is
    not valid), under ``rule`` or the run's own. ``metrics`` is a run's metrics.json with its
    ``run_dir``; each point keeps its records under ``_records`` (per-problem outcomes for
    intervals, :func:`evals.curves.outcomes`)."""
    strategy, n = metrics.get("strategy"), int(metrics.get("n", 1))
    if strategy not in SUBSAMPLABLE or n < 2:
        return []
    run_dir = Path(metrics["run_dir"])
    records = run_records(metrics)
    rule = rule or run_rule(records, run_dir, strategy)
    header = {key: metrics.get(key) for key in ("strategy", "policy", "dataset", "prm", "seed")}
    out, k = [], 1
    while k < n:
        subs = [subsample_record(r, k, rule) for r in records]
        out.append({**summarize(subs, **header, n=k), "subsampled_from": n, "run_dir": str(run_dir), "_records": subs})
        k *= 2
    return out
