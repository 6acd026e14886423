"""``report.md`` of a sweep (``itc-curves DIR``): the plots, the tables with their 95%
intervals, the frontier, the verifier comparison when the folder holds one, and a few
sentences generated from the intervals, each stating only what its interval supports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evals.curves import compare, differences, markdown_table, reference_line
from itc.results import atomic_writer
from itc.stats import CONFIDENCE, RESAMPLES, SEED

REPORT_FILE = "report.md"
VERIFIERS_FILE = "verifiers.md"  # written by evals.verifiers

_MAIN_FIELDS = ("strategy", "n", "accuracy", "vs_", "seeds", "seed_sd", "selection", "problems",
                "completion_tokens_per_problem", "flops_per_problem", "subsampled_from")


def _ci(d: dict[str, Any]) -> str:
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def findings(lines: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Sentences that state only what the paired intervals support."""
    out: list[str] = []
    ref = reference_line(lines)
    diffs = differences(lines)
    if ref is None:
        out.append("No majority run is in these folders, so no point is compared with majority at the same N.")
    elif diffs:
        shown = [(k, d) for k, d in diffs.items() if d["excludes_zero"]]
        for (label, n), d in shown:
            word = "more" if d["diff"] > 0 else "less"
            out.append(
                f"{label} at N={n} is {word} accurate than {ref} at N={n}: {_ci(d)} over {d['problems']} problems."
            )
        held = len(diffs) - len(shown)
        if held:
            out.append(
                f"{held} of {len(diffs)} differences from {ref} at the same N have an interval that holds 0: "
                "these problems do not show them."
            )
    for label, points in lines.items():
        if len(points) < 2:
            continue
        lo, hi = points[0], points[-1]
        d = compare(hi, lo)
        if d is None:
            continue
        if d["excludes_zero"]:
            word = "gains" if d["diff"] > 0 else "loses"
            out.append(f"{label} {word} {_ci(d)} from N={lo['n']} to N={hi['n']}.")
        else:
            out.append(f"{label} at N={hi['n']} is not distinguishable from N={lo['n']} ({_ci(d)}).")
    points = sorted((m for pts in lines.values() for m in pts), key=lambda m: -m["accuracy"])
    label_of = {id(m): label for label, pts in lines.items() for m in pts}
    if len(points) >= 2:
        top, second = points[0], points[1]
        d = compare(top, second)
        if d is not None:
            verdict = "the interval excludes 0" if d["excludes_zero"] else "the interval holds 0, so it is not shown to be better"
            out.append(
                f"The most accurate point is {label_of[id(top)]} at N={top['n']} ({top['accuracy']:.3f}); against the "
                f"next, {label_of[id(second)]} at N={second['n']}, {_ci(d)}: {verdict}."
            )
    spreads = [(label_of[id(m)], m) for m in points if m.get("seed_sd") is not None]
    if spreads:
        label, m = max(spreads, key=lambda x: x[1]["seed_sd"])
        ci = m.get("accuracy_ci")
        half = "" if not ci else f", beside a bootstrap half-width of {(ci[1] - ci[0]) / 2:.3f}"
        out.append(
            f"Repeated seeds are pooled; the largest between-seed spread is {label} at N={m['n']}: "
            f"sd {m['seed_sd']:.3f} over {len(m['seeds'])} seeds{half}."
        )
    return out


def write_report(
    out_dir: Path,
    dirs: list[str],
    lines: dict[str, list[dict[str, Any]]],
    rows: list[dict[str, Any]],
    pngs: list[Path],
    selection: str | None = None,
    frontier: tuple[list[Any], str] | None = None,
    skipped: list[str] | None = None,
) -> Path:
    """Write ``report.md`` in ``out_dir``; returns its path."""
    from evals.frontier import headline

    out_dir = Path(out_dir)
    rule = selection or "each run's configured rule"
    ref = reference_line(lines) or "majority"
    text = [
        "# Test-time scaling report",
        "",
        f"Runs: {', '.join(dirs)}. Selection: {rule}.",
        (
            f"Every accuracy has a {CONFIDENCE:.0%} percentile-bootstrap interval over problems "
            f"({RESAMPLES} resamples, seed {SEED}). Differences are paired (the same resampled problems) "
            f"against {ref} at the same N; `*` marks a difference whose interval excludes 0. Intervals "
            "are per comparison, not corrected for the number of comparisons."
        ),
        "",
    ]
    if skipped:
        text += [f"Left out (no PRM scores for {selection}): {', '.join(skipped)}.", ""]
    sentences = findings(lines)
    if frontier is not None:
        sentences += [headline(f, with_top=k == 0) for k, f in enumerate(frontier[0])]
    verifiers = _verifier_sections(dirs, out_dir)
    sentences += [v[1] for v in verifiers if v[1]]
    text += ["## Findings", "", *(f"- {s}" for s in sentences), ""]
    text += ["## Curves", "", *(f"![{p.stem}]({p.name})" for p in pngs), ""]
    main = [{k: v for k, v in r.items() if k.startswith(_MAIN_FIELDS)} for r in rows]
    text += ["## Accuracy", "", markdown_table(main), ""]
    by_level = [
        {"strategy": r["strategy"], "n": r["n"], **{k: v for k, v in r.items() if k.startswith("level_")}} for r in rows
    ]
    if len(by_level[0]) > 2:
        text += ["## Accuracy by level", "", markdown_table(by_level), ""]
    text += ["Full table (tokens sent and computed, wall time): [curves.md](curves.md), [curves.csv](curves.csv).", ""]
    if frontier is not None:
        text += ["## Compute-optimal frontier", "", frontier[1], ""]
    for section, _ in verifiers:
        text += [section, ""]
    path = out_dir / REPORT_FILE
    with atomic_writer(path) as f:
        f.write("\n".join(text))
    return path


def _verifier_sections(dirs: list[str], out_dir: Path) -> list[tuple[str, str]]:
    """Each verifier comparison (``verifiers.md`` of :mod:`evals.verifiers`) below ``dirs``,
    its images re-pointed relative to the report; with its headline sentence."""
    from evals.verifiers import headline_of

    found = sorted({p.resolve() for d in dirs if Path(d).is_dir() for p in Path(d).rglob(VERIFIERS_FILE)})
    out = []
    for path in found:
        rel = Path(os.path.relpath(path.parent, out_dir.resolve()))
        body = path.read_text(encoding="utf-8").replace("](verifiers", f"]({rel.as_posix()}/verifiers")
        out.append((body.replace("# ", "## ", 1), headline_of(path.parent)))
    return out
