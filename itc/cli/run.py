"""``itc-run``: run one strategy on one dataset with one policy (a Hydra app).

Examples::

    itc-run                                   # toy policy, toy problems, majority n=4
    itc-run strategy=greedy
    itc-run -m strategy=majority n=1,4,16     # a sweep (Hydra multirun)
    itc-run -m strategy=best_of_n prm=toy,toy-orm strategy.selection=highest,majority
    itc-run dataset=math500 dataset.path=data/math500.jsonl
    itc-run policy=qwen2.5-math-1.5b dataset=math500   # on a GPU with hub access
    itc-run shard=0/4                         # a quarter of the problems (itc-curves merges shards)
    itc-run -m hydra/launcher=ray shard=0/2,1/2   # jobs as Ray tasks (docs/cluster.md)

Outputs in the run folder: results.jsonl (one line per problem) and metrics.json.
Rerunning with the same settings resumes. ``itc-run --help`` lists the config groups.
Bad input or settings end with ``itc-run: error: ...`` and exit status 2 (``--debug``
for the traceback).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import itc.run_dir  # noqa: F401 - registers the run folder's resolvers before @hydra.main
from itc.cli.errors import cli_errors, run_hydra_app
from itc.cli.lifecycle import command_process

PROG = "itc-run"

log = logging.getLogger("itc.run")
# The process that ran main(); a job of a Ray or submitit sweep runs _app in another one.
_MAIN_PID: int | None = None
# configs/hydra/launcher/ray.yaml has the plugin's name and writes its config out in full
warnings.filterwarnings("ignore", message=r"(?s).*'hydra/launcher/ray' is validated against ConfigStore")


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="run")
def _app(cfg: DictConfig) -> float:
    if os.getpid() != _MAIN_PID:
        # A job in a launcher's worker (Ray, submitit): it works in the sweep's directory
        # (relative paths in the config), a failure goes back to the sweep's process (Hydra's
        # job return carries it), which reports it, and the job's engines go with the job.
        from itc.cli.lifecycle import shutdown_engines

        cwd = HydraConfig.get().runtime.cwd
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)

        try:
            return _run(cfg)
        finally:
            shutdown_engines()
    with cli_errors(PROG):  # here too, or Hydra reports the failed job before re-raising
        return _run(cfg)


def _run(cfg: DictConfig) -> float:
    from itc.config_schema import validate_run_config

    validate_run_config(cfg)  # before anything is loaded
    from itc.runner import run_experiment

    run_dir = HydraConfig.get().runtime.output_dir
    metrics = run_experiment(cfg, run_dir)
    log.info(
        "%s n=%d on %s: accuracy %.3f over %d problems (%s)",
        metrics["strategy"], metrics["n"], metrics["dataset"], metrics["accuracy"],
        metrics["num_problems"], run_dir,
    )
    return metrics["accuracy"]


def main() -> None:
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    with command_process():  # engines shut down, then exit 0, 2 or 1
        with cli_errors(PROG):  # a launcher without its extra, before Hydra starts
            from itc.cli.launchers import check_launchers

            check_launchers(sys.argv[1:])
        run_hydra_app(PROG, _app)


if __name__ == "__main__":
    main()
