"""Which jobs of a Hydra sweep are missing or incomplete.

A sweep folder (``multirun/<name>``) holds Hydra's ``multirun.yaml``, whose
``hydra.overrides.task`` lists the sweep's overrides (``strategy=a,b n=1,4``). Hydra's basic
sweeper expands them into one override list per job, and every job that started saved its
own list in ``<job>/.hydra/overrides.yaml`` (and, once it finished, in the folder's
``.hydra/jobs.yaml``: jobs can share a folder, as ``greedy`` at every ``n``; and in
``plan.json``, written when the job starts). A job is *missing* (not started) when no folder
holds its overrides, and *incomplete* (partial) when its folder has no ``metrics.json`` (the
run stopped before the end, e.g. a preempted cluster job; rerunning the sweep resumes it):
then ``plan.json`` and ``results.jsonl`` tell how many of its problems are written.
``itc-sweep-status DIR`` (itc/cli/sweep_status.py) prints each job's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from itc.results import METRICS_FILE, PLAN_FILE, ResultsStore, read_json

DONE, PARTIAL, NOT_STARTED = "done", "partial", "not started"  # a job's states


@dataclass
class JobStatus:
    """One job of a sweep: its overrides, its state and folder, problems written / total."""

    overrides: list[str]
    state: str
    run_dir: Path | None = None
    written: int | None = None
    total: int | None = None  # None when the run did not record it (older runs)

    def describe(self) -> str:
        count = f"{self.written}/{self.total if self.total is not None else '?'}" if self.written is not None else "-"
        where = f"  {self.run_dir}" if self.run_dir is not None else ""
        return f"{self.state:<11}  {count:>9}  {' '.join(self.overrides)}{where}"


@dataclass
class SweepStatus:
    folder: Path
    expected: int
    complete: list[Path] = field(default_factory=list)
    incomplete: list[Path] = field(default_factory=list)
    missing: list[list[str]] = field(default_factory=list)  # the jobs' overrides
    jobs: list[JobStatus] = field(default_factory=list)  # every job, in the sweep's order

    @property
    def ok(self) -> bool:
        return not self.incomplete and not self.missing

    def describe(self) -> list[str]:
        """One line per problem found, naming the job."""
        written = {j.run_dir: f" ({j.written}/{j.total if j.total is not None else '?'} problems written)" for j in self.jobs if j.state == PARTIAL}
        lines = [f"{self.folder}: incomplete run (no {METRICS_FILE}): {p}{written.get(p, '')}" for p in self.incomplete]
        lines += [f"{self.folder}: missing run: {' '.join(o)}" for o in self.missing]
        return lines


def expand_sweep(task_overrides: list[str]) -> list[list[str]]:
    """The per-job override lists of a sweep, as Hydra's basic sweeper makes them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(job) for batch in batches for job in batch]


def _key(overrides: list[str]) -> frozenset[str]:
    return frozenset(str(o) for o in overrides)


def sweep_status(folder: str | Path) -> SweepStatus | None:
    """The status of the sweep in ``folder``, or None when it holds no ``multirun.yaml``."""
    folder = Path(folder)
    spec = folder / "multirun.yaml"
    if not spec.is_file():
        return None
    task = list(OmegaConf.load(spec).hydra.overrides.task)
    jobs = expand_sweep(task)
    started: dict[frozenset[str], Path] = {}
    for plan in sorted(folder.rglob(PLAN_FILE)):  # started, perhaps with nothing written yet
        overrides = read_json(plan).get("overrides")
        if overrides is not None:
            started[_key(list(overrides))] = plan.parent
    for overrides in sorted(folder.rglob(".hydra/overrides.yaml")):
        run_dir = overrides.parent.parent
        started[_key(list(OmegaConf.load(overrides)))] = run_dir
    for finished in sorted(folder.rglob(".hydra/jobs.yaml")):  # jobs that shared a folder
        for job in OmegaConf.load(finished):
            started[_key(list(job))] = finished.parent.parent
    status = SweepStatus(folder=folder, expected=len(jobs))
    for job in jobs:
        run_dir = started.get(_key(job))
        if run_dir is None:
            status.missing.append(job)
            status.jobs.append(JobStatus(job, NOT_STARTED))
            continue
        plan = read_json(run_dir / PLAN_FILE) if (run_dir / PLAN_FILE).is_file() else {}
        written = len(ResultsStore(run_dir).done_ids)
        if (run_dir / METRICS_FILE).is_file():
            status.complete.append(run_dir)
            state = DONE
        else:
            status.incomplete.append(run_dir)
            state = PARTIAL
        status.jobs.append(JobStatus(job, state, run_dir, written, plan.get("problems")))
    return status
