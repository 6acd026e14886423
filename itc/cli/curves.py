"""``itc-curves``: scaling curves and a table from run or sweep folders.

    itc-curves multirun/default                  # every metrics.json below it
    itc-curves runs/a runs/b --out reports/ab     # several folders, output elsewhere
    itc-curves multirun/demo --subsample          # also N=1,2,4,8 from a best_of_n run at 16

Runs that a sweep folder's jobs should have made but that are missing or have no
metrics.json (stopped early) are reported. Writes curves.png (accuracy against N on a log scale, against completion tokens per
problem, and against estimated FLOPs per problem), curves_by_level.png, curves.md and curves.csv, and prints the Markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from itc.cli.errors import cli_errors, pop_debug_flag


def main(argv: list[str] | None = None) -> None:
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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    pop_debug_flag(["", "--debug"] if args.debug else [""])  # or HYDRA_FULL_ERROR=1
    with cli_errors("itc-curves"):
        _curves(args)


def _curves(args: argparse.Namespace) -> None:
    from evals.curves import collect_metrics, plot, series, table_rows, with_subsamples, write_tables
    from evals.sweep_status import sweep_status

    for d in args.dirs:  # a sweep that stopped early still gets its curves, with a report
        status = sweep_status(d)
        for line in status.describe() if status else []:
            print(f"itc-curves: warning: {line}", file=sys.stderr)

    metrics = collect_metrics(args.dirs)
    out = Path(args.out or args.dirs[0])
    lines = series(with_subsamples(metrics) if args.subsample else metrics)
    rows = table_rows(lines)
    csv_path, md_path = write_tables(rows, out)
    pngs = plot(lines, out)
    print(md_path.read_text())
    print("wrote " + ", ".join(str(p) for p in [*pngs, md_path, csv_path]))


if __name__ == "__main__":
    main()
