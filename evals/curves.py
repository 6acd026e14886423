"""Test-time scaling curves: accuracy against N, tokens and FLOPs, one line per configuration.

Each line is a strategy, labelled by whatever else differs between the runs drawn (the PRM,
the policy, a strategy's knob, ...: :func:`labels`). With a ``selection`` rule
(``majority``, ``weighted_majority/min``, ``highest/last``, ...) every run is drawn under
that one final choice, recomputed from its ``results.jsonl``, so that the lines compare
searches, not selection rules.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from itc.results import CONFIG_FILE, METRICS_FILE, ResultsStore, flatten, read_json, summarize

# identity keys that never label a line: N is the x axis, the weights follow from the PRM
_UNLABELLED = {"strategy.n", "strategy._target_", "prm_weights"}
_NAMES = ("strategy.name", "policy.name", "dataset.name", "prm.name")


def collect_metrics(dirs: list[str | Path]) -> list[dict[str, Any]]:
    """Every ``metrics.json`` in or below the given run or sweep folders."""
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
    return list(found.values())


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
    from evals.subsample import candidates_of
    from strategies.selection import parse_rule, select_rule

    parse_rule(rule)
    out, skipped = [], []
    for m in metrics:
        if m.get("selection") == rule or "subsampled_from" in m:
            out.append(m)
            continue
        records: list[dict[str, Any]] | None = []
        for r in ResultsStore(Path(m["run_dir"])).records:
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
        out.append({**m, **summarize(records, **header)})
    return out, skipped


def with_subsamples(metrics: list[dict[str, Any]], rule: str | None = None) -> list[dict[str, Any]]:
    """``metrics`` plus the smaller-N points each independent-sample run gives
    (:mod:`evals.subsample`), under ``rule`` or the run's own, placed first so that a real
    run at the same N wins."""
    from evals.subsample import subsampled_metrics

    return [s for m in metrics for s in subsampled_metrics(m, rule)] + list(metrics)


def series(metrics: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Metrics grouped into lines (:func:`labels`), each by N."""
    lines: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for m, label in zip(metrics, labels(metrics)):
        lines[label][int(m["n"])] = m  # a repeated (label, n) keeps the last found
    return {k: [v[n] for n in sorted(v)] for k, v in sorted(lines.items())}


def table_rows(lines: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    levels = sorted({lvl for pts in lines.values() for m in pts for lvl in m.get("accuracy_by_level", {})})
    rows = []
    for label, points in lines.items():
        for m in points:
            per = _per_problem(m)
            row = {
                "strategy": label,
                "n": m["n"],
                "accuracy": round(m["accuracy"], 4),
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
                row[f"level_{lvl}"] = None if acc is None else round(acc, 4)
            rows.append(row)
    return rows


def _per_problem(m: dict[str, Any]):
    """``per(key, fallback)``: ``m[key]`` (else ``m[fallback]``) per problem, rounded."""

    def per(key: str, fallback: str | None = None) -> float:
        return round(m.get(key, m.get(fallback, 0) if fallback else 0) / max(1, m["num_problems"]), 1)

    return per


def markdown_table(rows: list[dict[str, Any]]) -> str:
    fields = list(rows[0].keys())
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in fields) + " |" for r in rows]
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
    PRM together, from the tokens the engines computed) and ``curves_by_level.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (ax_n, ax_t, ax_f) = plt.subplots(1, 3, figsize=(15, 4.2))
    for label, pts in lines.items():
        ns = [m["n"] for m in pts]
        acc = [m["accuracy"] for m in pts]
        tok = [m["completion_tokens_per_problem"] for m in pts]
        flops = [m.get("flops_per_problem") or float("nan") for m in pts]
        style = dict(marker="o", label=label) if len(pts) > 1 else dict(marker="*", markersize=12, linestyle="", label=label)
        ax_n.plot(ns, acc, **style)
        ax_t.plot(tok, acc, **style)
        ax_f.plot(flops, acc, **style)
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
    fig.suptitle(f"Test-time scaling ({rule})")
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
                xs = [m["n"] for m in pts if lvl in m.get("accuracy_by_level", {})]
                ys = [m["accuracy_by_level"][lvl] for m in pts if lvl in m.get("accuracy_by_level", {})]
                ax.plot(xs, ys, marker="o" if len(xs) > 1 else "*", linestyle="-" if len(xs) > 1 else "", label=label)
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
