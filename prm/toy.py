"""The embedded world's PRM and ORM: names ``toy`` / ``toy-orm`` resolve to cached checkpoints.

They are trained by ``itc-train-prm`` (default config, ``objective=prm`` / ``orm``) on first
use, in a subprocess (the caller may itself be a Hydra app), and retrained when the toy
policy they were trained on, or the default recipe (``configs/train_prm.yaml``), has changed.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

from filelock import FileLock
from omegaconf import OmegaConf

from itc.cache import cache_dir

log = logging.getLogger(__name__)

TOY_MODELS = {"toy": "prm", "toy-orm": "orm"}
# Training settings that do not change the model a recipe makes.
_NOT_RECIPE = {
    "data": ("cache",),
    "policy": ("vllm",),  # engine tuning; the policy's model, backend and sampling do count
    "training": ("disable_tqdm", "logging_steps", "save_steps", "save_strategy", "save_total_limit"),
}


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ``itc-train-prm`` config (resolved) that decide the model it trains."""
    out = {k: config.get(k) for k in ("objective", "model", "format", "data", "training", "policy")}
    for section, keys in _NOT_RECIPE.items():
        out[section] = {k: v for k, v in (out[section] or {}).items() if k not in keys}
    return out


def default_recipe(objective: str) -> dict[str, Any]:
    """The recipe of ``configs/train_prm.yaml`` as shipped, for ``objective``."""
    configs = files("configs")
    cfg = OmegaConf.create(configs.joinpath("train_prm.yaml").read_text())
    # Hydra's composition of this file's defaults (config groups first, then the file itself),
    # by hand: this also runs inside Hydra apps, where hydra.compose would need a second
    # initialisation, which Hydra refuses.
    groups = [d for d in cfg.pop("defaults", []) if not isinstance(d, str)]
    cfg = OmegaConf.merge(
        *(
            {group: OmegaConf.create(configs.joinpath(group, f"{option}.yaml").read_text())}
            for d in groups
            for group, option in d.items()
        ),
        cfg,
    )
    cfg.objective = objective
    for section, keys in _NOT_RECIPE.items():
        for k in keys:
            cfg[section].pop(k, None)
    cfg.pop("output_dir", None)
    cfg.pop("hydra", None)
    return recipe(OmegaConf.to_container(cfg, resolve=True))


def changed_recipe_keys(trained: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Dotted keys where two recipes differ."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k2: v2 for k, v in d.items() for k2, v2 in flat(v, f"{prefix}.{k}" if prefix else k).items()}

    a, b = flat(trained), flat(wanted)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


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
            trained = json.loads(report.read_text())
            changed = changed_recipe_keys(recipe(trained.get("config") or {}), default_recipe(objective))
            if trained.get("policy_model") == policy and not changed:
                return out / "checkpoint"
            if changed:
                log.warning(
                    "the default recipe changed since the toy %s was trained (%s); retraining",
                    objective, ", ".join(changed[:6]) + (", ..." if len(changed) > 6 else ""),
                )
            else:
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
