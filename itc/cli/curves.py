"""``itc-curves``: scaling curves and a table from run or sweep folders.

    itc-curves multirun/default                  # every metrics.json below it
    itc-curves runs/a runs/b --out reports/ab     # several folders, output elsewhere
    itc-curves multirun/demo --subsample          # also N=1,2,4,8 from a best_of_n run at 16
    itc-curves multirun/demo --selection weighted_majority/min --log "demo, one rule"
    itc-curves multirun/demo --frontier level,pass_rate   # also the compute-optimal frontier

Writes curves.png (accuracy against N on a log scale, against completion tokens per
problem, and against estimated FLOPs per problem from the tokens the engines computed),
curves_by_level.png, curves.md and curves.csv, and report.md (the plots, the tables, the
frontier, a verifier comparison found below the folders, and sentences generated from the
intervals), and prints the Markdown table. Every accuracy has a 95% bootstrap interval over
problems; each point is compared with majority at the same N by a paired interval (`*`: it
excludes 0); runs that differ only in their seed are pooled, with the between-seed spread.
Each line is a strategy, labelled by what else differs between the runs (PRM, policy, a
knob, ...). Runs that a sweep folder's jobs should have made but that are missing or have no
metrics.json (stopped early) are named.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from itc.cli.errors import cli_errors, pop_debug_flag
from itc.errors import InputError


def main(argv: list[str] | None = None) -> None:
    from strategies.selection import RULES

    parser = argparse.ArgumentParser(
        prog="itc-curves", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", help="run or sweep folders (searched for metrics.json)")
    parser.add_argument("--out", help="output folder (default: the first folder given)")
    parser.add_argument(
        "--subsample",
        action="store_true",
        help="add the points at N=1,2,4,... that each majority or best_of_n run gives by taking "
        "its first k samples (valid for independent samples only; see evals/subsample.py)",
    )
    parser.add_argument(
        "--selection",
        metavar="RULE",
        help="draw every run under this final selection rule instead of its own, recomputed from "
        f"its results.jsonl; one of {', '.join(RULES)}. Runs whose candidates lack the PRM "
        "scores a rule needs are left out, and named",
    )
    parser.add_argument(
        "--log",
        metavar="TITLE",
        help="also write the table to the results log (docs/results/, or $ITC_RESULTS_LOG) "
        "under this title",
    )
    parser.add_argument(
        "--frontier",
        metavar="BINS",
        nargs="?",
        const="level",
        help="also the compute-optimal frontier (evals/frontier.py), per difficulty bin: a comma "
        "list of level, pass_rate, prm_score (default level); frontier_<bins>.png, frontier.md, "
        "frontier.json",
    )
    parser.add_argument(
        "--budget", choices=("flops", "tokens"), default="flops",
        help="the frontier's budget per problem: FLOPs, or tokens the engines computed (default flops)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    from evals.frontier import BINNINGS

    bins = [] if args.frontier is None else [b.strip() for b in args.frontier.split(",") if b.strip()]
    if args.frontier is not None and (not bins or any(b not in BINNINGS for b in bins)):
        parser.error(f"--frontier {args.frontier!r}: give a comma list of {', '.join(BINNINGS)}")
    args.bins = bins
    if args.selection is not None and args.selection not in RULES:
        parser.error(f"--selection {args.selection!r} is not one of {', '.join(RULES)}")
    pop_debug_flag(["", "--debug"] if args.debug else [""])  # or HYDRA_FULL_ERROR=1
    with cli_errors("itc-curves"):
        _curves(args, argv)


def _curves(args: argparse.Namespace, argv: list[str] | None) -> None:
    from evals.curves import (
        collect_metrics,
        markdown_table,
        plot,
        series,
        table_rows,
        under_selection,
        with_subsamples,
        write_tables,
    )
    from evals.sweep_status import sweep_status

    for d in args.dirs:  # a sweep that stopped early still gets its curves, with a report
        status = sweep_status(d)
        for line in status.describe() if status else []:
            print(f"itc-curves: warning: {line}", file=sys.stderr)

    metrics = collect_metrics(args.dirs)
    skipped: list[str] = []
    if args.selection:
        metrics, skipped = under_selection(metrics, args.selection)
        for run in skipped:
            print(f"itc-curves: left out {run}: no PRM scores for {args.selection}", file=sys.stderr)
        if not metrics:
            raise InputError(f"no run can be drawn under {args.selection}")
    out = Path(args.out or args.dirs[0])
    lines = series(with_subsamples(metrics, args.selection) if args.subsample else metrics)
    rows = table_rows(lines)
    csv_path, md_path = write_tables(rows, out)
    pngs = plot(lines, out, args.selection)
    frontier, frontier_paths = None, []
    if args.bins:
        from evals.frontier import write_frontiers

        try:
            fronts, frontier_md, frontier_paths = write_frontiers(lines, args.bins, args.budget, out)
        except ValueError as e:  # too few runs with records, no sample run for these bins
            raise InputError(f"--frontier: {e}") from None
        frontier = (fronts, frontier_md)
    from evals.report import write_report

    report = write_report(out, args.dirs, lines, rows, pngs, args.selection, frontier, skipped)
    print(md_path.read_text())
    if frontier is not None:
        print(frontier[1])
    print("wrote " + ", ".join(str(p) for p in [*pngs, md_path, csv_path, *frontier_paths, report]))
    if args.log:
        from itc.results_log import write_entry

        rule = args.selection or "each run's configured rule"
        body = f"Selection: {rule}. Runs: {', '.join(args.dirs)}.\n\n" + markdown_table(rows)
        if frontier is not None:
            # plots stay in the output folder (not kept in the repository): named, not embedded
            body += "\n" + re.sub(r"!\[[^\]]*\]\((frontier_[^)]+)\)", lambda g: f"Plot: `{out / g[1]}`.", frontier[1])
        if skipped:
            body += "\nLeft out (no PRM scores for this rule): " + ", ".join(skipped) + "\n"
        argv_text = " ".join(sys.argv[1:] if argv is None else argv)
        print(f"logged {write_entry(args.log, body, command=f'itc-curves {argv_text}')}")


if __name__ == "__main__":
    main()
