"""``itc-run``: run one strategy on one dataset with one policy (a Hydra app).

Examples::

    itc-run                                   # toy policy, toy problems, majority n=4
    itc-run strategy=greedy
    itc-run -m strategy=majority n=1,4,16     # a sweep (Hydra multirun)
    itc-run -m strategy=best_of_n prm=toy,toy-orm strategy.selection=highest,majority
    itc-run dataset=math500 dataset.path=data/math500.jsonl
    itc-run policy=qwen2.5-math-1.5b dataset=math500   # on a GPU with hub access

Outputs in the run folder: results.jsonl (one line per problem) and metrics.json.
Rerunning with the same settings resumes. ``itc-run --help`` lists the config groups.
Bad input or settings end with ``itc-run: error: ...`` and exit status 2 (``--debug``
for the traceback).
"""

from __future__ import annotations

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import itc.run_dir  # noqa: F401 - registers the run folder's resolvers before @hydra.main
from itc.cli.errors import cli_errors, run_hydra_app
from itc.cli.lifecycle import command_process

PROG = "itc-run"

log = logging.getLogger("itc.run")


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="run")
def _app(cfg: DictConfig) -> float:
    with cli_errors(PROG):  # here too, or Hydra reports the failed job before re-raising
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
    with command_process():  # engines shut down, then exit 0, 2 or 1
        run_hydra_app(PROG, _app)


if __name__ == "__main__":
    main()
