"""The embedded world's PRM and ORM: names ``toy`` / ``toy-orm`` resolve to cached checkpoints.

They are trained by ``itc-train-prm`` (default config, ``objective=prm`` / ``orm``) on first
use, in a subprocess (the caller may itself be a Hydra app), and retrained when the toy
policy they were trained on has changed.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

from itc.cache import cache_dir

log = logging.getLogger(__name__)

TOY_MODELS = {"toy": "prm", "toy-orm": "orm"}


def toy_prm_path(name: str = "toy") -> Path:
    """The checkpoint folder of the toy PRM (``toy``) or ORM (``toy-orm``), trained if needed."""
    from itc.toy.build import policy_path

    objective = TOY_MODELS[name]
    out = cache_dir() / "prm" / f"toy-{objective}"
    out.parent.mkdir(parents=True, exist_ok=True)
    policy = str(policy_path(progress=False))
    with FileLock(str(out.parent / f"toy-{objective}.lock")):
        report = out / "train_report.json"
        if report.exists() and (out / "checkpoint").is_dir():
            if json.loads(report.read_text()).get("policy_model") == policy:
                return out / "checkpoint"
            log.warning("the toy policy changed since the toy %s was trained; retraining", objective)
        log.warning("Training the embedded world's %s (once; cached in %s)", objective, out)
        cmd = [
            sys.executable, "-m", "itc.cli.train_prm",
            f"objective={objective}", f"output_dir={out}", "overwrite=true",
            "training.disable_tqdm=true",
        ]
        subprocess.run(cmd, check=True)
    return out / "checkpoint"


def resolve_prm_model(model: str) -> str:
    """``toy`` / ``toy-orm`` name the embedded world's reward models; anything else is kept."""
    return str(toy_prm_path(model)) if model in TOY_MODELS else model
