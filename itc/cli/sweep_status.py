"""``itc-sweep-status``: each job of a sweep folder, from its files: done, partial (problems
written / total) or not started, so that a user sees what to rerun after a stopped or
preempted job (rerunning the same sweep command finishes only what is missing).

    itc-sweep-status multirun/default
    itc-sweep-status multirun/demo multirun/sweep-new
"""

from __future__ import annotations

import argparse

from itc.cli.errors import cli_errors, pop_debug_flag
from itc.errors import InputError

PROG = "itc-sweep-status"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", help="sweep folders (multirun/<name>, holding multirun.yaml)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    pop_debug_flag(["", "--debug"] if args.debug else [""])
    with cli_errors(PROG):
        from evals.sweep_status import DONE, NOT_STARTED, PARTIAL, sweep_status

        for d in args.dirs:
            status = sweep_status(d)
            if status is None:
                raise InputError(f"{d}: not a sweep folder (no multirun.yaml; itc-run -m writes one)")
            print(f"{d}: {status.expected} jobs")
            print(f"{'state':<11}  {'problems':>9}  overrides  folder")
            for job in status.jobs:
                print(job.describe())
            counts = {s: sum(j.state == s for j in status.jobs) for s in (DONE, PARTIAL, NOT_STARTED)}
            print(", ".join(f"{n} {s}" for s, n in counts.items()))
            if not status.ok:
                print("rerun the same sweep command to finish it: the problems written are kept")


if __name__ == "__main__":
    main()
