"""Test-time scaling curves: accuracy against N, tokens and FLOPs, one line per configuration.

Each line is a strategy, labelled by whatever else differs between the runs drawn (the PRM,
the policy, a strategy's knob, ...: :func:`labels`). With a ``selection`` rule
(``majority``, ``weighted_majority/min``, ``highest/last``, ...) every run is drawn under
that one final choice, recomputed from its ``results.jsonl``, so that the lines compare
searches, not selection rules.

Every accuracy carries a 95% bootstrap interval over problems (:mod:`itc.stats`), computed
from the runs' ``results.jsonl``. Runs of one configuration that differ only in ``seed`` are
pooled into one point: its accuracy is the mean over seeds, its interval the bootstrap over
problems of each problem's mean outcome across seeds, and the between-seed spread (standard
deviation of the seeds' accuracies) is shown beside it. Each point is compared with the
reference line, ``majority`` at the same N (the policy alone, same samples budget), by the
paired bootstrap over the problems both ran; a difference whose interval excludes 0 is
marked ``*``.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from itc.results import (
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    flatten,
    read_json,
    read_results,
    summarize,
)
from itc.stats import bootstrap_mean, paired_difference, rounded

# identity keys that never label a line: N is the x axis, the weights follow from the PRM,
# repeated seeds of one configuration are pooled into one point
_UNLABELLED = {"strategy.n", "strategy._target_", "prm_weights", "seed", "shard"}
REFERENCE = "majority"  # the line every point is compared with, at the same N
_NAMES = ("strategy.name", "policy.name", "dataset.name", "prm.name")


def collect_metrics(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every ``metrics.json`` in or below the given run or sweep folders; the shards of a run
    merged into one (:mod:`evals.shards`)."""
    found: dict[Path, dict[str, Any]] = {}
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise FileNotFoundError(f"{d} does not exist")
        paths = [d] if d.is_file() else sorted(d.rglob(METRICS_FILE))
        for path in paths:
            metrics = read_json(path)
            metrics["run_dir"] = str(path.parent)
            found[path.resolve()] = metrics
    if not found:
        raise FileNotFoundError(f"no {METRICS_FILE} under {', '.join(map(str, dirs))}")
    from evals.shards import merge_shards

    return merge_shards(list(found.values()))


def identity(m: dict[str, Any]) -> dict[str, Any]:
    """The flattened configuration of a run (its ``run_config.json``), else what its metrics
    name (runs written before the configuration was kept)."""
    path = Path(m.get("run_dir") or ".") / CONFIG_FILE
    flat = flatten(read_json(path)) if m.get("run_dir") and path.exists() else {}
    for key, field in zip(_NAMES, ("strategy", "policy", "dataset", "prm")):
        if flat.get(key) is None:
            flat[key] = m.get(field)
    return flat


def labels(metrics: list[dict[str, Any]]) -> list[str]:
    """A label per run: its strategy, then each config value that differs between the runs
    and is not already told by those shown before it (a PRM's aggregation by its name, a
    strategy's own knobs by the strategy)."""
    flats = [identity(m) for m in metrics]

    def text(f: dict[str, Any], k: str) -> str:
        return json.dumps(f.get(k), sort_keys=True, default=str)

    keys = sorted(set().union(*flats) - _UNLABELLED, key=lambda k: (_NAMES.index(k) if k in _NAMES else 9, k))
    shown = ["strategy.name"]
    for k in keys:
        if k in shown or len({text(f, k) for f in flats}) < 2:
            continue
        told: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for f in flats:
            told[tuple(text(f, s) for s in shown)].add(text(f, k))
        if any(len(v) > 1 for v in told.values()):
            shown.append(k)
    return [
        " ".join([str(f.get("strategy.name")), *(f"{_short(k)}={f[k]}" for k in shown[1:] if f.get(k) is not None)])
        for f in flats
    ]


def _short(key: str) -> str:
    return key.split(".")[0] if key in _NAMES else key.removeprefix("strategy.")


def under_selection(metrics: list[dict[str, Any]], rule: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Each run's metrics recomputed from its records as if ``rule`` had made the final
    choice; and the run folders that cannot be (the rule needs PRM scores their candidates
    lack: a run without a PRM, or with ``score_candidates=false``)."""
    from evals.shards import run_records
    from evals.subsample import candidates_of
    from strategies.selection import parse_rule, select_rule

    parse_rule(rule)
    out, skipped = [], []
    for m in metrics:
        if m.get("selection") == rule or "subsampled_from" in m:
            out.append(m)
            continue
        records: list[dict[str, Any]] | None = []
        for r in run_records(m):
            known = r.get("correct_by_selection") or {}
            if rule in known:
                correct = bool(known[rule])
            else:  # runs recorded before every rule was: choose again
                cands = candidates_of(r)
                if rule != "majority" and any(c.step_scores is None for c in cands):
                    records = None
                    break
                k = select_rule(cands, rule, r.get("among"))
                correct = k is not None and bool(cands[k].correct)
            records.append({**r, "correct": correct, "selection": rule})
        if not records:
            skipped.append(m["run_dir"])
            continue
        header = {k: m.get(k) for k in ("strategy", "n", "policy", "dataset", "prm", "seed")}
        out.append({**m, **summarize(records, **header), "_records": records})
    return out, skipped


def with_subsamples(metrics: list[dict[str, Any]], rule: str | None = None) -> list[dict[str, Any]]:
    """``metrics`` plus the smaller-N points each independent-sample run gives
    (:mod:`evals.subsample`), under ``rule`` or the run's own, placed first so that a real
    run at the same N wins."""
    from evals.subsample import subsampled_metrics

    return [s for m in metrics for s in subsampled_metrics(m, rule)] + list(metrics)


def outcomes(m: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Per problem id: ``correct`` (0/1, or the mean over pooled seeds), ``level``, its cost
    (``tokens`` the engines computed: prompt, completion and PRM input; ``flops``) and its
    ``candidates``; from the records a recomputation kept (``_records``), else the run's
    ``results.jsonl``; None for a run without records."""
    if "_outcomes" in m:
        return m["_outcomes"]
    records = m.get("_records")
    if records is None:
        run_dir = m.get("run_dir")
        if not run_dir or not (Path(run_dir) / RESULTS_FILE).exists():
            return None
        records = read_results(run_dir)
    return {
        str(r["problem_id"]): {
            "correct": float(bool(r["correct"])),
            "level": str(r.get("level")),
            "tokens": r.get("prompt_tokens_computed", r.get("prompt_tokens", 0))
            + r.get("completion_tokens", 0)
            + r.get("prm_tokens_computed", r.get("prm_tokens", 0)),
            "flops": r.get("policy_flops", 0.0) + r.get("prm_flops", 0.0),
            "candidates": r.get("candidates", []),
        }
        for r in records
    }


def pooled(points: list[dict[str, Any]]) -> dict[str, Any]:
    """One point from runs of one configuration at different seeds (or one run): accuracy
    the mean over seeds; per-problem outcomes averaged over the seeds (on the problems every
    seed ran), with intervals over problems; ``seed_sd`` the between-seed spread."""
    m = dict(points[-1])
    per_seed = [outcomes(p) for p in points]
    accs = [float(p["accuracy"]) for p in points]
    m["seeds"] = [p.get("seed") for p in points]
    m["seed_accuracies"] = accs
    m["seed_sd"] = float(np.std(accs, ddof=1)) if len(points) > 1 else None
    if len(points) > 1:
        m["accuracy"] = float(np.mean(accs))
        for key in ("completion_tokens_per_problem", "flops_per_problem", "wall_seconds"):
            m[key] = float(np.mean([p.get(key) or 0.0 for p in points]))
    if any(o is None for o in per_seed):  # no records: the run's own interval, if one run
        m["_outcomes"] = None
        if len(points) > 1:
            m["accuracy_ci"], m["accuracy_by_level_ci"] = None, {}
        return m
    ids = sorted(set.intersection(*(set(o) for o in per_seed)))
    merged = {
        pid: {
            **per_seed[-1][pid],
            **{k: float(np.mean([o[pid][k] for o in per_seed])) for k in ("correct", "tokens", "flops")},
        }
        for pid in ids
    }
    m["_outcomes"] = merged
    if len(points) > 1:  # the pooled point's own figures, on the problems every seed ran
        m["accuracy"] = float(np.mean([o["correct"] for o in merged.values()])) if merged else 0.0
        m["num_problems"] = len(merged)
    m["accuracy_ci"] = rounded(bootstrap_mean([o["correct"] for o in merged.values()]))
    by_level: dict[str, list[float]] = defaultdict(list)
    for o in merged.values():
        by_level[o["level"]].append(o["correct"])
    m["accuracy_by_level"] = {lvl: float(np.mean(v)) for lvl, v in sorted(by_level.items())} if by_level else m.get("accuracy_by_level", {})
    m["accuracy_by_level_ci"] = {lvl: rounded(bootstrap_mean(v)) for lvl, v in sorted(by_level.items())}
    return m


def series(metrics: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Metrics grouped into lines (:func:`labels`), each by N; runs that differ only in their
    seed are pooled into one point (:func:`pooled`)."""
    lines: dict[str, dict[int, dict[Any, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for m, label in zip(metrics, labels(metrics)):
        lines[label][int(m["n"])][m.get("seed")] = m  # a repeated (label, n, seed) keeps the last found
    return {
        k: [pooled(list(v[n].values())) for n in sorted(v)] for k, v in sorted(lines.items())
    }


def reference_line(lines: dict[str, list[dict[str, Any]]]) -> str | None:
    """The label of the reference line: the first ``majority`` line."""
    for label, points in lines.items():
        if points and points[0].get("strategy") == REFERENCE:
            return label
    return None


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """Paired difference of two points' accuracies over the problems both ran (a - b)."""
    oa, ob = outcomes(a), outcomes(b)
    if oa is None or ob is None:
        return None
    ids = sorted(set(oa) & set(ob))
    d = paired_difference([oa[i]["correct"] for i in ids], [ob[i]["correct"] for i in ids])
    return None if d is None else {**d, "problems": len(ids)}


def differences(lines: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Each point's paired difference from the reference line at the same N."""
    ref = reference_line(lines)
    if ref is None:
        return {}
    at = {int(m["n"]): m for m in lines[ref]}
    out = {}
    for label, points in lines.items():
        for m in points:
            n = int(m["n"])
            if label != ref and n in at and (d := compare(m, at[n])) is not None:
                out[(label, n)] = d
    return out


def table_rows(lines: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per point: accuracy with its interval (``_low``/``_high``), the paired
    difference from the reference at the same N, the seeds pooled, tokens, FLOPs, levels."""
    levels = sorted({lvl for pts in lines.values() for m in pts for lvl in m.get("accuracy_by_level", {})})
    diffs = differences(lines)
    ref = reference_line(lines)
    rows = []
    for label, points in lines.items():
        for m in points:
            per = _per_problem(m)
            ci = m.get("accuracy_ci") or [None, None]
            d = diffs.get((label, int(m["n"])))
            row = {
                "strategy": label,
                "n": m["n"],
                "accuracy": round(m["accuracy"], 4),
                "accuracy_low": ci[0],
                "accuracy_high": ci[1],
                f"vs_{ref or REFERENCE}": None if d is None else round(d["diff"], 4),
                f"vs_{ref or REFERENCE}_low": None if d is None else round(d["low"], 4),
                f"vs_{ref or REFERENCE}_high": None if d is None else round(d["high"], 4),
                f"vs_{ref or REFERENCE}_excludes_0": None if d is None else d["excludes_zero"],
                "seeds": len(m.get("seeds") or [m.get("seed")]),
                "seed_sd": None if m.get("seed_sd") is None else round(m["seed_sd"], 4),
                "selection": m.get("selection"),
                "problems": m["num_problems"],
                "completion_tokens_per_problem": round(m["completion_tokens_per_problem"], 1),
                "prompt_tokens_per_problem": per("prompt_tokens"),
                "prompt_tokens_computed_per_problem": per("prompt_tokens_computed", "prompt_tokens"),
                "prm_tokens_per_problem": per("prm_tokens"),
                "prm_tokens_computed_per_problem": per("prm_tokens_computed", "prm_tokens"),
                "flops_per_problem": f"{m.get('flops_per_problem', 0.0):.3g}",
                "wall_seconds": m.get("wall_seconds"),
                "subsampled_from": m.get("subsampled_from"),
            }
            for lvl in levels:
                acc = m.get("accuracy_by_level", {}).get(lvl)
                lci = (m.get("accuracy_by_level_ci") or {}).get(lvl) or [None, None]
                row[f"level_{lvl}"] = None if acc is None else round(acc, 4)
                row[f"level_{lvl}_low"], row[f"level_{lvl}_high"] = lci
            rows.append(row)
    return rows


def _per_problem(m: dict[str, Any]):
    """``per(key, fallback)``: ``m[key]`` (else ``m[fallback]``) per problem, rounded."""

    def per(key: str, fallback: str | None = None) -> float:
        return round(m.get(key, m.get(fallback, 0) if fallback else 0) / max(1, m["num_problems"]), 1)

    return per


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as Markdown; ``x``, ``x_low``, ``x_high`` shown as one cell ``x [low, high]``,
    a difference whose interval excludes 0 marked ``*``."""
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    def cell(r: dict[str, Any], k: str) -> str:
        text = fmt(r[k])
        if r.get(f"{k}_low") is not None and r.get(f"{k}_high") is not None:
            text += f" [{fmt(float(r[f'{k}_low']))}, {fmt(float(r[f'{k}_high']))}]"
            if r.get(f"{k}_excludes_0"):
                text += " *"
        return text

    fields = [k for k in rows[0] if not k.endswith(("_low", "_high", "_excludes_0"))]
    heads = [f"{k} [95% CI]" if any(r.get(f"{k}_low") is not None for r in rows) else k for k in fields]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(cell(r, k) for k in fields) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys())
    csv_path, md_path = out_dir / "curves.csv", out_dir / "curves.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    md_path.write_text(markdown_table(rows))
    return csv_path, md_path


def plot(lines: dict[str, list[dict[str, Any]]], out_dir: Path, selection: str | None = None) -> list[Path]:
    """``curves.png`` (accuracy vs N, vs completion tokens, vs estimated FLOPs of policy and
    PRM together, from the tokens the engines computed) and ``curves_by_level.png``; each
    line with its 95% band (a single point with its error bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (ax_n, ax_t, ax_f) = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, pts in lines.items():
        ns = [m["n"] for m in pts]
        acc = [m["accuracy"] for m in pts]
        cis = [m.get("accuracy_ci") for m in pts]
        tok = [m["completion_tokens_per_problem"] for m in pts]
        flops = [m.get("flops_per_problem") or float("nan") for m in pts]
        for ax, xs in ((ax_n, ns), (ax_t, tok), (ax_f, flops)):
            draw(ax, xs, acc, cis, label)
    ax_n.set_xscale("log", base=2)
    ax_n.set_xlabel("N (budget per problem)")
    ax_t.set_xscale("log")
    ax_t.set_xlabel("completion tokens per problem (all generated, pruned included)")
    ax_f.set_xscale("log")
    ax_f.set_xlabel("FLOPs per problem: 2 x params x tokens computed\n(policy + PRM; prefix-cache hits not counted)")
    rule = f"selection {selection}" if selection else "each run's own selection"
    for ax in (ax_n, ax_t, ax_f):
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    ax_n.legend(fontsize=8)
    fig.suptitle(f"Test-time scaling ({rule}; bands: 95% bootstrap intervals over problems)")
    fig.tight_layout()
    main = out_dir / "curves.png"
    fig.savefig(main, dpi=120)
    plt.close(fig)

    levels = sorted({lvl for pts in lines.values() for m in pts for lvl in m.get("accuracy_by_level", {})})
    paths = [main]
    if levels:
        fig, axes = plt.subplots(1, len(levels), figsize=(3.2 * len(levels), 3.2), sharey=True, squeeze=False)
        for ax, lvl in zip(axes[0], levels):
            for label, pts in lines.items():
                pts = [m for m in pts if lvl in m.get("accuracy_by_level", {})]
                xs = [m["n"] for m in pts]
                ys = [m["accuracy_by_level"][lvl] for m in pts]
                draw(ax, xs, ys, [(m.get("accuracy_by_level_ci") or {}).get(lvl) for m in pts], label)
            ax.set_xscale("log", base=2)
            ax.set_title(f"level {lvl}")
            ax.set_xlabel("N")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("accuracy")
        axes[0][-1].legend(fontsize=7)
        fig.tight_layout()
        by_level = out_dir / "curves_by_level.png"
        fig.savefig(by_level, dpi=110)
        plt.close(fig)
        paths.append(by_level)
    return paths


def draw(ax: Any, xs: list[float], ys: list[float], cis: list[Any], label: str) -> None:
    """A line with its 95% band, or a single point with its error bar (intervals may be
    missing: runs without records)."""
    have = all(ci is not None for ci in cis)
    if len(xs) > 1:
        (line,) = ax.plot(xs, ys, marker="o", label=label)
        if have:
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=line.get_color(), alpha=0.15)
    elif xs:
        err = [[ys[0] - cis[0][0]], [cis[0][1] - ys[0]]] if have else None
        ax.errorbar(xs, ys, yerr=err, marker="*", markersize=12, linestyle="", capsize=3, label=label)
