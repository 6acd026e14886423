"""The demo's verdict: do the embedded world's curves show what test-time compute should?

    python -m evals.verdict multirun/demo [--n 16]

Reads the sweep's runs and checks three facts at the largest budget ``n``, each strategy
under its configured selection:

- voting pays: majority@n >= greedy + 5 points;
- a verifier pays beyond voting: PRM best-of-n >= majority@n + 5 points;
- searching pays: beam search@n > majority@n.

Prints one line per fact (the figures with their 95% intervals from ``metrics.json``, then
"yes" or "NO") and exits 0 either way: a verdict is a report, not a test. A fact whose runs
are missing says so. The paired intervals of the differences are in the sweep's report.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (name, strategy, reference strategy, margin in points, whether the margin may be reached exactly)
FACTS = (
    ("voting beats greedy decoding", "majority", "greedy", 5.0, True),
    ("a PRM beats voting", "best_of_n", "majority", 5.0, True),
    ("beam search beats voting", "beam_search", "majority", 0.0, False),
)


def run_at(metrics: Sequence[dict[str, Any]], strategy: str, n: int) -> dict[str, Any] | None:
    """The metrics of ``strategy`` at budget ``n`` (greedy at any n: it has one), or None."""
    for m in metrics:
        if m.get("strategy") == strategy and (strategy == "greedy" or m.get("n") == n):
            return m
    return None


def _ci(m: dict[str, Any]) -> str:
    ci = m.get("accuracy_ci")
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def verdict(metrics: Sequence[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """One entry per fact: the two accuracies, the difference in points and whether it holds."""
    out = []
    for name, strategy, reference, margin, inclusive in FACTS:
        ma, mb = run_at(metrics, strategy, n), run_at(metrics, reference, n)
        entry: dict[str, Any] = {"fact": name, "strategy": strategy, "reference": reference, "margin": margin}
        if ma is None or mb is None:
            entry["holds"] = None
        else:
            a, b = float(ma["accuracy"]), float(mb["accuracy"])
            diff = round(100 * (a - b), 1)
            entry.update(accuracy=a, reference_accuracy=b, difference=diff, ci=_ci(ma), reference_ci=_ci(mb))
            entry["holds"] = diff >= margin if inclusive else diff > margin
        out.append(entry)
    return out


def format_verdict(entries: Sequence[dict[str, Any]], n: int) -> str:
    lines = [f"Verdict at n={n} (each strategy under its configured selection):"]
    for e in entries:
        label = f"{e['strategy']}@{n}" if e["strategy"] != "greedy" else "greedy"
        ref = f"{e['reference']}@{n}" if e["reference"] != "greedy" else "greedy"
        plus = f" + {e['margin']:g} points" if e["margin"] else ""
        want = f"{'>=' if e['margin'] else '>'} {ref}{plus}"
        if e["holds"] is None:
            lines.append(f"- {e['fact']}: not measured ({label} or {ref} is missing from the sweep)")
            continue
        lines.append(
            f"- {e['fact']}: {label} {e['accuracy']:.3f}{e['ci']} vs {ref} {e['reference_accuracy']:.3f}{e['reference_ci']} "
            f"({e['difference']:+.1f} points; wanted {label} {want}): {'yes' if e['holds'] else 'NO'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from evals.curves import collect_metrics

    ap = argparse.ArgumentParser(prog="python -m evals.verdict", description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", type=Path, help="a sweep folder (e.g. multirun/demo)")
    ap.add_argument("--n", type=int, default=None, help="the budget to judge at (default: the sweep's largest)")
    args = ap.parse_args(argv)
    try:
        metrics = collect_metrics([args.sweep])
    except FileNotFoundError as e:
        print(f"python -m evals.verdict: error: {e}", file=sys.stderr)
        return 2
    n = args.n or max(int(m.get("n") or 1) for m in metrics)
    print(format_verdict(verdict(metrics, n), n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
