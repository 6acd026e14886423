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
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import itc.run_dir  # noqa: F401  (registers the run folder's resolvers before @hydra.main)

log = logging.getLogger("itc.run")


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="run")
def main(cfg: DictConfig) -> float:
    from itc.data import DatasetError
    from itc.policy import PromptTooLongError
    from itc.runner import ConfigMismatchError, run_experiment
    from strategies.base import StrategyConfigError

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        metrics = run_experiment(cfg, run_dir)
    except (DatasetError, PromptTooLongError, ConfigMismatchError, StrategyConfigError, FileNotFoundError) as e:
        log.error("%s", e)
        print(f"itc-run: error: {e}", file=sys.stderr)
        sys.exit(2)
    log.info(
        "%s n=%d on %s: accuracy %.3f over %d problems (%s)",
        metrics["strategy"], metrics["n"], metrics["dataset"], metrics["accuracy"],
        metrics["num_problems"], run_dir,
    )
    return metrics["accuracy"]


if __name__ == "__main__":
    main()
