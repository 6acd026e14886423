"""The compute-optimal frontier per difficulty bin (Snell et al. 2024, "Scaling LLM test-time
compute optimally"), without leakage.

A *setting* is one point of a sweep (a strategy line at one N: :func:`evals.curves.series`);
its *budget* is its mean cost per problem, counted as the engines computed it (``flops``:
policy plus PRM FLOPs; or ``tokens``: prompt tokens not read from the prefix cache,
completion tokens and PRM input tokens computed). Problems are binned by difficulty:

- ``level``: the dataset's level;
- ``pass_rate``: the policy's estimated pass rate, the share of right samples in the
  independent-sample run (``majority``, else ``best_of_n``) with the most samples;
- ``prm_score``: the PRM's mean final-step score over that run's samples (needs no answers,
  so it bins problems of a dataset without levels or labels).

Model-predicted bins are quantiles (5 by default; fewer where scores tie).

For each budget B (the budgets of the settings) the frontier picks, in each bin, the most
accurate setting whose budget is at most B, on one half of the problems, and scores that
choice on the other half; then the halves swap (2-fold, split at random within each bin,
seeded). Every problem is scored exactly once, by a choice made without it.

Against the frontier stand the fixed settings. The best fixed setting's top accuracy A* (at
budget C*) is chosen on all problems, in hindsight, which favours it. Reported: the
smallest budget at which the frontier reaches A* and C* over it (Snell et al.'s "4x less
compute"), and at each budget the frontier's accuracy minus the best fixed setting within
that budget. Intervals are the bootstrap over problems (:mod:`itc.stats`) of the frontier's
scored outcomes and the fixed settings' outcomes, resampled together; they cover the
sampling of problems given the choices made, not the variation of the random split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evals.curves import outcomes
from itc.stats import CONFIDENCE, SEED, bootstrap_mean, paired_difference, resample_indices

BINNINGS = ("level", "pass_rate", "prm_score")
BUDGETS = ("flops", "tokens")
INDEPENDENT = ("majority", "best_of_n")  # strategies whose candidates are i.i.d. samples


@dataclass
class Setting:
    """One point of the sweep, on the problems every setting ran (aligned arrays)."""

    label: str
    n: int
    correct: np.ndarray
    cost: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.label} N={self.n}"

    @property
    def budget(self) -> float:
        return float(self.cost.mean())

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


@dataclass
class Frontier:
    binning: str
    budget_kind: str
    ids: list[str]
    bins: np.ndarray
    settings: list[Setting]
    halves: tuple[np.ndarray, np.ndarray]
    # one per budget: {"budget", "accuracy", "accuracy_ci", "cost", "gain", ...}
    points: list[dict[str, Any]] = field(default_factory=list)
    # one per (budget, fold, bin): the setting chosen, the problems it was chosen on and scored on
    choices: list[dict[str, Any]] = field(default_factory=list)
    # each point's per-problem outcomes and costs (rows: budgets)
    scored: np.ndarray | None = None
    scored_cost: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def settings_of(lines: dict[str, list[dict[str, Any]]], budget: str = "flops") -> tuple[list[str], list[Setting]]:
    """The problems every point ran, and each point as a :class:`Setting` on them. Points
    without records are left out."""
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r} is not one of {', '.join(BUDGETS)}")
    points = [(label, m, outcomes(m)) for label, pts in lines.items() for m in pts]
    points = [(label, m, o) for label, m, o in points if o]
    if len(points) < 2:
        raise ValueError("the frontier needs at least two runs with results.jsonl")
    ids = sorted(set.intersection(*(set(o) for _, _, o in points)))
    if len(ids) < 4:
        raise ValueError(f"the runs share {len(ids)} problems; the frontier's 2-fold split needs at least 4")
    settings = [
        Setting(label, int(m["n"]), np.array([o[i]["correct"] for i in ids], float), np.array([o[i][budget] for i in ids], float))
        for label, m, o in points
    ]
    return ids, settings


def difficulty(binning: str, ids: list[str], lines: dict[str, list[dict[str, Any]]], num_bins: int = 5) -> np.ndarray:
    """A bin label per problem (strings, ordered easy to hard where the binning says)."""
    if binning not in BINNINGS:
        raise ValueError(f"binning {binning!r} is not one of {', '.join(BINNINGS)}")
    if binning == "level":
        first = next(o for pts in lines.values() for m in pts if (o := outcomes(m)))
        return np.array([f"level {first[i]['level']}" for i in ids])
    source = _sample_run(lines, need_scores=binning == "prm_score")
    if source is None:
        what = "PRM scores on its samples" if binning == "prm_score" else "samples"
        raise ValueError(f"binning by {binning} needs a majority or best_of_n run at N>1 with {what}")
    o = outcomes(source)
    if binning == "pass_rate":
        score = np.array([np.mean([bool(c.get("correct")) for c in o[i]["candidates"]]) for i in ids])
    else:
        score = np.array([np.mean([c["step_scores"][-1] for c in o[i]["candidates"] if c.get("step_scores")] or [0.0]) for i in ids])
    # quantile bins, hardest (lowest score) first; tied scores share a bin
    edges = np.unique(np.quantile(score, np.linspace(0, 1, num_bins + 1)[1:-1]))
    which = np.searchsorted(edges, score, side="right")
    names = {
        k: f"q{k + 1}: {binning} {score[which == k].min():.2f}-{score[which == k].max():.2f}"
        for k in np.unique(which)
    }
    return np.array([names[k] for k in which])


def _sample_run(lines: dict[str, list[dict[str, Any]]], need_scores: bool) -> dict[str, Any] | None:
    """The independent-sample run with the most samples (majority first), with PRM scores on
    its samples when ``need_scores``."""
    best: tuple[int, int, dict[str, Any]] | None = None
    for pts in lines.values():
        for m in pts:
            if m.get("strategy") not in INDEPENDENT or int(m["n"]) < 2 or m.get("subsampled_from"):
                continue
            o = outcomes(m)
            if not o:
                continue
            if need_scores and not all(c.get("step_scores") for r in o.values() for c in r["candidates"]):
                continue
            key = (int(m["n"]), int(m.get("strategy") == "majority"))
            if best is None or key > best[:2]:
                best = (*key, m)
    return None if best is None else best[2]


def two_fold_split(bins: np.ndarray, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the problem indices, each bin split at random (seeded)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for k in sorted(set(bins.tolist())):
        idx = rng.permutation(np.flatnonzero(bins == k))
        half = (len(idx) + rng.integers(0, 2)) // 2  # odd bins: the extra problem to either half
        a += idx[:half].tolist()
        b += idx[half:].tolist()
    return np.array(sorted(a), int), np.array(sorted(b), int)


def choose(settings: list[Setting], budget: float, rows: np.ndarray) -> int | None:
    """The most accurate setting on ``rows`` among those within ``budget`` (ties: the
    cheaper, then the first); None when none fits."""
    fits = [k for k, s in enumerate(settings) if s.budget <= budget * (1 + 1e-9)]
    if not fits:
        return None
    return max(fits, key=lambda k: (settings[k].correct[rows].mean() if len(rows) else 0.0, -settings[k].budget, -k))


def compute_frontier(
    ids: list[str], settings: list[Setting], bins: np.ndarray, binning: str = "level", budget_kind: str = "flops", seed: int = SEED
) -> Frontier:
    """The 2-fold frontier at each setting's budget, against the fixed settings."""
    halves = two_fold_split(bins, seed)
    f = Frontier(binning, budget_kind, ids, bins, settings, halves)
    budgets = sorted({s.budget for s in settings})
    scored, scored_cost = [], []
    for budget in budgets:
        correct, cost = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
        for fold, (chosen_on, scored_on) in enumerate((halves, halves[::-1])):
            for b in sorted(set(bins.tolist())):
                c_rows = chosen_on[bins[chosen_on] == b]
                s_rows = scored_on[bins[scored_on] == b]
                k = choose(settings, budget, c_rows)
                assert k is not None  # the cheapest setting fits every budget
                correct[s_rows] = settings[k].correct[s_rows]
                cost[s_rows] = settings[k].cost[s_rows]
                f.choices.append({
                    "budget": budget, "fold": fold, "bin": b, "setting": settings[k].name,
                    "chosen_on": [ids[i] for i in c_rows], "scored_on": [ids[i] for i in s_rows],
                })
        scored.append(correct)
        scored_cost.append(cost)
    f.scored, f.scored_cost = np.array(scored), np.array(scored_cost)
    fixed = np.array([s.correct for s in settings])
    for j, budget in enumerate(budgets):
        within = [k for k, s in enumerate(settings) if s.budget <= budget * (1 + 1e-9)]
        best = max(within, key=lambda k: (settings[k].accuracy, -settings[k].budget))
        gain = paired_difference(f.scored[j], fixed[best])
        f.points.append({
            "budget": budget,
            "cost": float(f.scored_cost[j].mean()),
            "accuracy": float(f.scored[j].mean()),
            "accuracy_ci": bootstrap_mean(f.scored[j]),
            "best_fixed": settings[best].name,
            "best_fixed_accuracy": settings[best].accuracy,
            "gain": gain,
            "chosen": sorted({c["setting"] for c in f.choices if c["budget"] == budget}),
        })
    f.summary = _reach(f)
    return f


def _reach(f: Frontier, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The budget at which the frontier reaches the best fixed setting's top accuracy, and
    the compute ratio, each with a bootstrap interval (problems resampled jointly)."""
    fixed = np.array([s.correct for s in f.settings])
    fixed_cost = np.array([s.cost for s in f.settings])
    top = max(range(len(f.settings)), key=lambda k: (f.settings[k].accuracy, -f.settings[k].budget))

    def reach(acc_f: np.ndarray, cost_f: np.ndarray, acc_fixed: np.ndarray, cost_fixed: np.ndarray) -> tuple[float, float]:
        k = int(np.lexsort((cost_fixed, -acc_fixed))[0])  # most accurate, then cheapest
        ok = np.flatnonzero(acc_f >= acc_fixed[k] - 1e-12)
        if not len(ok):
            return np.inf, 0.0
        cost = float(cost_f[ok].min())
        return cost, float(cost_fixed[k] / cost) if cost > 0 else np.inf

    point = reach(f.scored.mean(1), f.scored_cost.mean(1), fixed.mean(1), fixed_cost.mean(1))
    idx = resample_indices(len(f.ids))
    reps = np.array([
        reach(f.scored[:, r].mean(1), f.scored_cost[:, r].mean(1), fixed[:, r].mean(1), fixed_cost[:, r].mean(1))
        for r in idx
    ])
    alpha = (1 - confidence) / 2
    reached = np.isfinite(reps[:, 0])
    out: dict[str, Any] = {
        "best_fixed": f.settings[top].name,
        "best_fixed_accuracy": f.settings[top].accuracy,
        "best_fixed_accuracy_ci": bootstrap_mean(f.settings[top].correct),
        "best_fixed_budget": f.settings[top].budget,
        "reach_budget": None if not np.isfinite(point[0]) else point[0],
        "compute_ratio": None if not np.isfinite(point[0]) else point[1],
        "reached_share": float(reached.mean()),
    }
    # the interval's bounds where the resamples that never reach count as infinite budget
    # (ratio 0): a bound that falls among them is reported as None (not reached)
    qs = [alpha, 1 - alpha]
    lo_b, hi_b = np.quantile(reps[:, 0], qs, method="inverted_cdf")
    lo_r, hi_r = np.quantile(reps[:, 1], qs, method="inverted_cdf")
    fin = lambda x: None if not np.isfinite(x) else float(x)
    out["reach_budget_ci"] = [fin(lo_b), fin(hi_b)]
    out["compute_ratio_ci"] = [fin(lo_r) if lo_r > 0 else 0.0, fin(hi_r)]
    at_top = next((p for p in f.points if p["budget"] >= f.settings[top].budget * (1 - 1e-9)), None)
    out["gain_at_best_fixed_budget"] = None if at_top is None else at_top["gain"]
    return out


def _fmt_ci(ci: Any, digits: int = 3) -> str:
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _fmt_budget(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.3g}"


def markdown(f: Frontier) -> str:
    """The frontier's table (one row per budget) and its headline, in Markdown."""
    unit = "FLOPs" if f.budget_kind == "flops" else "tokens computed"
    lines = [
        (
            f"Bins by **{f.binning}** "
            f"({', '.join(f'{b}: {int((f.bins == b).sum())}' for b in sorted(set(f.bins.tolist())))} problems); "
            f"budget: {unit} per problem; 2-fold (choose on one half, score on the other)."
        ),
        "",
        "| budget | frontier cost | frontier accuracy [95% CI] | best fixed within budget | its accuracy | gain [95% CI] | settings chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in f.points:
        g = p["gain"]
        gain = f"{g['diff']:+.3f} {_fmt_ci((g['low'], g['high']))}" + (" *" if g["excludes_zero"] else "")
        lines.append(
            f"| {p['budget']:.3g} | {p['cost']:.3g} | {p['accuracy']:.3f} {_fmt_ci(p['accuracy_ci'])} | "
            f"{p['best_fixed']} | {p['best_fixed_accuracy']:.3f} | {gain} | {', '.join(p['chosen'])} |"
        )
    lines += ["", headline(f), ""]
    return "\n".join(lines)


def headline(f: Frontier, with_top: bool = True) -> str:
    """What the intervals support about the frontier against the best fixed setting (and,
    ``with_top``, that setting's accuracy first)."""
    s = f.summary
    unit = "FLOPs" if f.budget_kind == "flops" else "tokens"
    top = (
        f"The best fixed setting, {s['best_fixed']}, reaches {s['best_fixed_accuracy']:.3f} "
        f"{_fmt_ci(s['best_fixed_accuracy_ci'])} at {s['best_fixed_budget']:.3g} {unit} per problem."
    )
    lo, hi = s["reach_budget_ci"]
    if s["reach_budget"] is None:
        reach = (
            f" The frontier (bins by {f.binning}) does not reach that accuracy at any budget "
            f"(it does in {100 * s['reached_share']:.1f}% of bootstrap resamples)."
        )
    else:
        r_lo, r_hi = s["compute_ratio_ci"]
        reach = (
            f" The frontier (bins by {f.binning}) reaches it at {_fmt_budget(s['reach_budget'])} {unit} "
            f"(95% CI {_fmt_budget(lo)} to {_fmt_budget(hi)}), {s['compute_ratio']:.2f}x less compute "
            f"(95% CI {r_lo:.2f}x to {'not reached' if r_hi is None else f'{r_hi:.2f}x'})."
        )
    g = s.get("gain_at_best_fixed_budget")
    gain = ""
    if g is not None:
        verdict = "an interval that excludes 0" if g["excludes_zero"] else "an interval that holds 0: no difference is shown"
        gain = (
            f" At that setting's budget the frontier's accuracy minus the best fixed setting's within it is "
            f"{g['diff']:+.3f} {_fmt_ci((g['low'], g['high']))}, {verdict}."
        )
    return (top + reach if with_top else reach.lstrip()) + gain


def to_json(f: Frontier) -> dict[str, Any]:
    """The frontier's figures and every choice it made (which problems chose, which scored)."""
    return {
        "binning": f.binning,
        "budget": f.budget_kind,
        "problems": len(f.ids),
        "bins": {b: int((f.bins == b).sum()) for b in sorted(set(f.bins.tolist()))},
        "settings": [{"setting": s.name, "budget": s.budget, "accuracy": s.accuracy} for s in f.settings],
        "points": f.points,
        "summary": f.summary,
        "choices": f.choices,
    }


def plot(f: Frontier, lines: dict[str, list[dict[str, Any]]], path: Any) -> None:
    """The frontier (with its 95% band) against each fixed strategy's line, accuracy vs budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evals.curves import draw

    by_label: dict[str, list[Setting]] = {}
    for s in f.settings:
        by_label.setdefault(s.label, []).append(s)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for label, ss in by_label.items():
        ss = sorted(ss, key=lambda s: s.budget)
        draw(ax, [s.budget for s in ss], [s.accuracy for s in ss], [bootstrap_mean(s.correct) for s in ss], label)
    pts = sorted({(p["cost"], p["accuracy"], tuple(p["accuracy_ci"])) for p in f.points})
    ax.plot([p[0] for p in pts], [p[1] for p in pts], color="black", linewidth=2.2, marker="D", label=f"frontier (bins: {f.binning})")
    ax.fill_between([p[0] for p in pts], [p[2][0] for p in pts], [p[2][1] for p in pts], color="black", alpha=0.12)
    ax.set_xscale("log")
    unit = "FLOPs per problem (policy + PRM, computed)" if f.budget_kind == "flops" else "tokens computed per problem"
    ax.set_xlabel(unit)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Compute-optimal frontier by {f.binning} (2-fold) vs fixed strategies; 95% bands")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_frontiers(
    lines: dict[str, list[dict[str, Any]]], binnings: list[str], budget: str, out_dir: Any
) -> tuple[list[Frontier], str, list[Any]]:
    """The frontier under each binning: ``frontier_<binning>.png``, ``frontier.json`` and
    ``frontier.md`` in ``out_dir``; returns the frontiers, the Markdown and the paths."""
    from pathlib import Path

    from itc.results import atomic_writer, write_json_atomic

    out_dir = Path(out_dir)
    ids, settings = settings_of(lines, budget)
    frontiers, texts, paths = [], [], []
    for binning in binnings:
        f = compute_frontier(ids, settings, difficulty(binning, ids, lines), binning, budget)
        png = out_dir / f"frontier_{binning}.png"
        plot(f, lines, png)
        frontiers.append(f)
        texts.append(f"### Frontier, bins by {binning}\n\n![frontier by {binning}]({png.name})\n\n{markdown(f)}")
        paths.append(png)
    md = "\n".join(texts)
    with atomic_writer(out_dir / "frontier.md") as fh:
        fh.write(md)
    write_json_atomic(out_dir / "frontier.json", [to_json(f) for f in frontiers])
    return frontiers, md, [*paths, out_dir / "frontier.md", out_dir / "frontier.json"]
