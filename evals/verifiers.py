"""Verifiers side by side on the same samples ("Let's Verify Step by Step", Lightman et al. 2023).

The policy samples N solutions per problem once (an ``itc-run`` majority run at N with the PRM
scoring every candidate's steps, in ``<out>/samples``); the ORM scores the same solutions
(``<out>/orm_scores.json``). Then, for every k = 1, 2, 4, ..., N, the first k samples of each
problem (independent samples, so a valid draw of k: :mod:`evals.subsample`) are chosen from
by the selection stage (:mod:`strategies.selection`) under each verifier:

- majority vote (no verifier);
- ORM best-of-N (the ORM's score, read under its own aggregation: ``last``);
- PRM best-of-N under each aggregation (last, min, product, mean);
- PRM-weighted majority (answers weighted by the PRM's score, its configured aggregation);
- pass@k (some sample is right): the ceiling of every selection.

Every accuracy has its 95% bootstrap interval over problems; the headline, PRM best-of-N (its
configured aggregation) minus ORM best-of-N at the largest N, has the paired interval.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from evals.subsample import candidates_of
from itc.results import atomic_writer, read_json, write_json_atomic
from itc.stats import bootstrap_mean, paired_difference
from prm.scoring.aggregate import AGGREGATIONS
from strategies.selection import select_rule

SAMPLES = "samples"
ORM_SCORES = "orm_scores.json"
RESULT = "verifiers.json"
TABLE = "verifiers.md"
PLOT = "verifiers.png"


def powers(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n`` (and ``n`` itself)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return [*ks, n]


def methods(prm_aggregation: str, orm_aggregation: str) -> dict[str, tuple[str, str]]:
    """Method name -> (whose scores: ``prm`` or ``orm``, selection rule)."""
    out = {"majority": ("prm", "majority"), f"ORM best-of-N ({orm_aggregation})": ("orm", f"highest/{orm_aggregation}")}
    out.update({f"PRM best-of-N ({a})": ("prm", f"highest/{a}") for a in AGGREGATIONS})
    out[f"PRM-weighted majority ({prm_aggregation})"] = ("prm", f"weighted_majority/{prm_aggregation}")
    return out


def orm_key(orm_model: str, records: Sequence[dict[str, Any]]) -> str:
    """What the ORM's kept scores depend on: its weights and the samples it scored."""
    from itc.cache import checkpoint_fingerprint, fingerprint
    from prm.toy import resolve_prm_model

    samples = json.dumps([[r["problem_id"], [c["steps"] for c in r["candidates"]]] for r in records])
    return fingerprint(checkpoint_fingerprint(resolve_prm_model(orm_model)), samples)


def kept_orm_scores(path: Path, key: str) -> dict[str, list[list[float]]] | None:
    """The ORM scores kept in ``path`` for ``key``, or None (none kept, or for other weights
    or other samples)."""
    if not path.exists():
        return None
    kept = read_json(path)
    return kept["scores"] if isinstance(kept, dict) and kept.get("key") == key else None


def score_with_orm(orm: Any, records: Sequence[dict[str, Any]], path: Path, key: str) -> dict[str, list[list[float]]]:
    """The ORM's step scores of every record's candidates (one batched call), kept in
    ``path`` under ``key`` (:func:`orm_key`) and read back while the key holds."""
    known = kept_orm_scores(path, key)
    if known is not None:
        return known
    scores = orm.score([r["problem"] for r in records], [[c["steps"] for c in r["candidates"]] for r in records])
    out = {r["problem_id"]: s for r, s in zip(records, scores)}
    write_json_atomic(path, {"key": key, "scores": out})
    return out


def outcomes(
    records: Sequence[dict[str, Any]], orm_scores: dict[str, list[list[float]]], ns: Sequence[int], prm_aggregation: str, orm_aggregation: str
) -> dict[str, dict[int, np.ndarray]]:
    """Per method and k: each problem's 0/1 outcome when choosing among its first k samples."""
    table = methods(prm_aggregation, orm_aggregation)
    out: dict[str, dict[int, np.ndarray]] = {name: {} for name in [*table, "pass@N"]}
    per_record = []
    for r in records:
        prm_c = candidates_of(r)
        if any(c.step_scores is None for c in prm_c):
            raise ValueError(f"problem {r['problem_id']!r}: candidates without PRM scores (run with a prm and score_candidates=true)")
        orm_c = [replace(c, step_scores=s, meta={}) for c, s in zip(prm_c, orm_scores[r["problem_id"]])]
        per_record.append({"prm": prm_c, "orm": orm_c})
    for k in ns:
        for name, (whose, rule) in table.items():
            hits = []
            for cands in per_record:
                pool = cands[whose][:k]
                i = select_rule(pool, rule)
                hits.append(i is not None and bool(pool[i].correct))
            out[name][k] = np.array(hits, float)
        out["pass@N"][k] = np.array([any(bool(c.correct) for c in cands["prm"][:k]) for cands in per_record], float)
    return out


def compare(
    records: Sequence[dict[str, Any]], orm_scores: dict[str, list[list[float]]], n: int, prm_aggregation: str, orm_aggregation: str
) -> dict[str, Any]:
    """Accuracies with intervals per method and k, and the paired headline differences at N."""
    ns = powers(n)
    res = outcomes(records, orm_scores, ns, prm_aggregation, orm_aggregation)
    table = {
        name: {str(k): {"accuracy": float(v.mean()), "ci": bootstrap_mean(v)} for k, v in by_k.items()}
        for name, by_k in res.items()
    }
    prm_name, orm_name = f"PRM best-of-N ({prm_aggregation})", f"ORM best-of-N ({orm_aggregation})"
    top = max(ns)
    return {
        "problems": len(records),
        "n": top,
        "ns": ns,
        "prm_aggregation": prm_aggregation,
        "orm_aggregation": orm_aggregation,
        "accuracy": table,
        "prm_minus_orm": paired_difference(res[prm_name][top], res[orm_name][top]),
        "prm_minus_majority": paired_difference(res[prm_name][top], res["majority"][top]),
        "orm_minus_majority": paired_difference(res[orm_name][top], res["majority"][top]),
        "headline_methods": [prm_name, orm_name],
    }


def markdown(result: dict[str, Any], prm: str, orm: str) -> str:
    """The table (one row per method, one column per N) and the headline."""
    ns = result["ns"]
    lines = [
        f"# Verifiers on the same samples (PRM {prm}, ORM {orm}, {result['problems']} problems)",
        "",
        f"![verifiers]({PLOT})",
        "",
        "| method | " + " | ".join(f"N={k}" for k in ns) + " |",
        "|---|" + "---|" * len(ns),
    ]
    for name, by_k in result["accuracy"].items():
        cells = [f"{by_k[str(k)]['accuracy']:.3f} [{by_k[str(k)]['ci'][0]:.3f}, {by_k[str(k)]['ci'][1]:.3f}]" for k in ns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Accuracy [95% bootstrap interval over problems]; pass@N is the ceiling of every selection.", ""]
    lines += [f"- {s}" for s in sentences(result)]
    return "\n".join(lines) + "\n"


def sentences(result: dict[str, Any]) -> list[str]:
    """The headline differences at the largest N, each saying whether its interval excludes 0."""
    prm_name, orm_name = result["headline_methods"]
    out = []
    for key, a, b in (("prm_minus_orm", prm_name, orm_name), ("prm_minus_majority", prm_name, "majority"), ("orm_minus_majority", orm_name, "majority")):
        d = result[key]
        verdict = "the interval excludes 0" if d["excludes_zero"] else "the interval holds 0: no difference is shown"
        out.append(
            f"At N={result['n']}, {a} minus {b}: {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (paired); {verdict}."
        )
    return out


def plot(result: dict[str, Any], path: Path, prm: str, orm: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evals.curves import draw

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, by_k in result["accuracy"].items():
        ks = [int(k) for k in by_k]
        draw(ax, ks, [by_k[str(k)]["accuracy"] for k in ks], [by_k[str(k)]["ci"] for k in ks], name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N (samples per problem, the same samples for every method)")
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Verifiers side by side: PRM {prm} vs ORM {orm} vs majority; 95% bands")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cfg: Any, out: Path, orm_cfg: Any, policy: Any = None, prm: Any = None, orm: Any = None, release: Any = None) -> dict[str, Any]:
    """Sample and score once (``cfg``: an itc-run config, majority at N with a prm), score the
    same samples with the ORM (``orm_cfg``), compare; writes the JSON, table and plot in ``out``.
    ``release`` is called between sampling and the ORM (frees the engines a command started)."""
    from itc.results import ResultsStore
    from itc.runner import run_experiment

    out = Path(out)
    run_experiment(cfg, out / SAMPLES, policy=policy, prm=prm)
    records = ResultsStore(out / SAMPLES).records
    if release is not None:
        release()
    key = orm_key(orm_cfg.model, records)
    if orm is None and kept_orm_scores(out / ORM_SCORES, key) is None:
        from prm.scoring import build_prm

        orm = build_prm(orm_cfg, seed=cfg.seed)
    orm_scores = score_with_orm(orm, records, out / ORM_SCORES, key)
    result = compare(records, orm_scores, int(cfg.n), cfg.prm.aggregation, orm_cfg.aggregation)
    result.update({"prm": cfg.prm.name, "orm": orm_cfg.name, "policy": cfg.policy.name, "dataset": cfg.dataset.name})
    write_json_atomic(out / RESULT, _jsonable(result))
    with atomic_writer(out / TABLE) as f:
        f.write(markdown(result, cfg.prm.name, orm_cfg.name))
    plot(result, out / PLOT, cfg.prm.name, orm_cfg.name)
    return result


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def headline_of(folder: Path) -> str:
    """The PRM-minus-ORM sentence of a comparison written in ``folder`` (for report.md)."""
    path = Path(folder) / RESULT
    if not path.exists():
        return ""
    return sentences(read_json(path))[0]
