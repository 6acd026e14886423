"""``itc-train-prm``: train a PRM or its ORM baseline (a Hydra app, ``configs/train_prm.yaml``).

    itc-train-prm                       # the embedded world's PRM (cached; prm=toy uses it)
    itc-train-prm objective=orm         # the outcome-reward baseline (prm=toy-orm)
    itc-train-prm --help                # every option

Writes ``<output_dir>/checkpoint`` and ``<output_dir>/train_report.json``; a rerun after an
interruption resumes from the last Trainer checkpoint, and a finished run is kept unless
``overwrite=true`` or it was trained with another recipe (model, format, data, training).
The work is :func:`prm.training.pipeline.train_from_config`'s.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from itc.cli.errors import cli_errors, run_hydra_app
from itc.cli.lifecycle import command_process
from itc.config_schema import validate_groups

PROG = "itc-train-prm"

log = logging.getLogger("itc.train_prm")


@hydra.main(version_base="1.3", config_path="pkg://configs", config_name="train_prm")
def _app(cfg: DictConfig) -> None:
    # their settings are many and checked where they are read: a ValueError there is one
    with cli_errors(PROG, also=(ValueError,)):
        validate_groups(cfg, "policy")  # before any data, engine or model loads
        from prm.training.pipeline import PRMQualityError, train_from_config

        try:
            report = train_from_config(cfg)
        except PRMQualityError as e:  # trained, but below the floor: a failed build, not a bug
            print(f"{PROG}: error: {e}", file=sys.stderr)
            sys.exit(1)
    log.info(
        "%s trained: loss %.4f on %d examples -> %s",
        report["objective"], report["train_loss"], report["examples"], report["checkpoint"],
    )


def main() -> None:
    with command_process():  # engines shut down, then exit 0, 2 or 1
        run_hydra_app(PROG, _app)


if __name__ == "__main__":
    main()
