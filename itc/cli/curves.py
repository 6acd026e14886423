"""``itc-curves``: scaling curves and a table from run or sweep folders.

    itc-curves multirun/default                  # every metrics.json below it
    itc-curves runs/a runs/b --out reports/ab     # several folders, output elsewhere

Writes curves.png (accuracy against N on a log scale, and against completion tokens per
problem), curves_by_level.png, curves.md and curves.csv, and prints the Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="itc-curves", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dirs", nargs="+", help="run or sweep folders (searched for metrics.json)")
    parser.add_argument("--out", help="output folder (default: the first folder given)")
    args = parser.parse_args(argv)

    from evals.curves import collect_metrics, plot, series, table_rows, write_tables

    try:
        metrics = collect_metrics(args.dirs)
    except FileNotFoundError as e:
        print(f"itc-curves: error: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(args.out or args.dirs[0])
    lines = series(metrics)
    rows = table_rows(lines)
    csv_path, md_path = write_tables(rows, out)
    pngs = plot(lines, out)
    print(md_path.read_text())
    print("wrote " + ", ".join(str(p) for p in [*pngs, md_path, csv_path]))


if __name__ == "__main__":
    main()
