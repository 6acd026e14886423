"""Test-time scaling curves: accuracy against N, tokens and FLOPs, one line per strategy."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

from itc.results import METRICS_FILE, read_json


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


def with_subsamples(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``metrics`` plus the smaller-N points each independent-sample run gives
    (:mod:`evals.subsample`), placed first so that a real run at the same N wins."""
    from evals.subsample import subsampled_metrics

    return [s for m in metrics for s in subsampled_metrics(m)] + list(metrics)


def series(metrics: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Metrics grouped into lines (by strategy, plus policy/dataset when they vary), by N."""
    policies = {m.get("policy") for m in metrics}
    datasets = {m.get("dataset") for m in metrics}
    lines: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for m in metrics:
        label = m["strategy"]
        if len(policies) > 1:
            label = f"{m.get('policy')}/{label}"
        if len(datasets) > 1:
            label = f"{label} [{m.get('dataset')}]"
        lines[label][int(m["n"])] = m  # a repeated (label, n) keeps the last found
    return {k: [v[n] for n in sorted(v)] for k, v in sorted(lines.items())}


def table_rows(lines: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    levels = sorted({lvl for pts in lines.values() for m in pts for lvl in m.get("accuracy_by_level", {})})
    rows = []
    for label, points in lines.items():
        for m in points:
            row = {
                "strategy": label,
                "n": m["n"],
                "accuracy": round(m["accuracy"], 4),
                "problems": m["num_problems"],
                "completion_tokens_per_problem": round(m["completion_tokens_per_problem"], 1),
                "prm_tokens_per_problem": round(m.get("prm_tokens", 0) / max(1, m["num_problems"]), 1),
                "flops_per_problem": f"{m.get('flops_per_problem', 0.0):.3g}",
                "wall_seconds": m.get("wall_seconds"),
                "subsampled_from": m.get("subsampled_from"),
            }
            for lvl in levels:
                acc = m.get("accuracy_by_level", {}).get(lvl)
                row[f"level_{lvl}"] = None if acc is None else round(acc, 4)
            rows.append(row)
    return rows


def write_tables(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys())
    csv_path, md_path = out_dir / "curves.csv", out_dir / "curves.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in fields) + " |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def plot(lines: dict[str, list[dict[str, Any]]], out_dir: Path) -> list[Path]:
    """``curves.png`` (accuracy vs N, vs completion tokens, vs estimated FLOPs of policy and
    PRM together) and ``curves_by_level.png``."""
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
    ax_t.set_xlabel("completion tokens per problem")
    ax_f.set_xscale("log")
    ax_f.set_xlabel("FLOPs per problem (policy + PRM, 2 x params x tokens)")
    for ax in (ax_n, ax_t, ax_f):
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    ax_n.legend(fontsize=8)
    fig.suptitle("Test-time scaling")
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
