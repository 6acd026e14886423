"""The embedded world's PRM and ORM: names ``toy`` / ``toy-orm`` resolve to cached checkpoints.

They are trained with ``itc-train-prm``'s default config (``objective=prm`` / ``orm``;
:func:`prm.training.pipeline.train_from_config`) where a model is loaded by that name and its
checkpoint is missing or stale: the toy policy it was trained on, or the default recipe
(``configs/train_prm.yaml``), has changed since. Working out a run's identity
(``resolve_prm_model(..., train=False)``) never trains.
"""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from itc.cache import cache_entry, cached_build
from itc.results import write_json_atomic

log = logging.getLogger(__name__)

TOY_MODELS = {"toy": "prm", "toy-orm": "orm"}
# Training settings that do not change the model a recipe makes.
_NOT_RECIPE = {
    "data": ("cache",),
    # engine tuning and serving (the openai block, and the defaults line that includes it);
    # the policy's model, backend and sampling do count
    "policy": ("vllm", "openai", "defaults"),
    "training": ("disable_tqdm", "logging_steps", "save_steps", "save_strategy", "save_total_limit"),
}


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ``itc-train-prm`` config (resolved) that decide the model it trains."""
    out = {k: config.get(k) for k in ("objective", "model", "format", "data", "training", "policy")}
    for section, keys in _NOT_RECIPE.items():
        out[section] = {k: v for k, v in (out[section] or {}).items() if k not in keys}
    return out


def default_config(objective: str) -> DictConfig:
    """``configs/train_prm.yaml`` as shipped, composed, for ``objective`` (no ``hydra`` key)."""
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
    cfg.pop("hydra", None)
    return cfg


def default_recipe(objective: str) -> dict[str, Any]:
    """The recipe of ``configs/train_prm.yaml`` as shipped, for ``objective``."""
    cfg = default_config(objective)
    for section, keys in _NOT_RECIPE.items():
        for k in keys:
            cfg[section].pop(k, None)
    cfg.pop("output_dir", None)
    return recipe(OmegaConf.to_container(cfg, resolve=True))


def changed_recipe_keys(trained: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Dotted keys where two recipes differ."""

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        return {k2: v2 for k, v in d.items() for k2, v2 in flat(v, f"{prefix}.{k}" if prefix else k).items()}

    a, b = flat(trained), flat(wanted)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _entry(name: str) -> Path:
    return cache_entry(f"prm/toy-{TOY_MODELS[name]}")


def _stale(entry: Path, objective: str, policy: str) -> str | None:
    """Why the toy PRM in ``entry`` is not the one to use now (None: it is)."""
    report = entry / "train_report.json"
    if not (report.exists() and (entry / "checkpoint").is_dir()):
        return "not trained"
    trained = json.loads(report.read_text())
    changed = changed_recipe_keys(recipe(trained.get("config") or {}), default_recipe(objective))
    if changed:
        return "the default recipe changed since it was trained (" + ", ".join(changed[:6]) + (
            ", ...)" if len(changed) > 6 else ")"
        )
    if trained.get("policy_model") != policy:
        return "the toy policy changed since it was trained"
    return None


def toy_prm_path(name: str = "toy") -> Path:
    """The checkpoint folder of the toy PRM (``toy``) or ORM (``toy-orm``), trained first
    if it is missing or stale (:func:`itc.cache.cached_build`; an interrupted training
    resumes)."""
    from itc.toy.build import policy_path
    from prm.training.pipeline import train_from_config

    objective = TOY_MODELS[name]
    policy = str(policy_path(progress=False))

    def is_built(entry: Path) -> bool:
        reason = _stale(entry, objective, policy)
        if reason not in (None, "not trained"):
            log.warning("retraining the toy %s: %s", objective, reason)
        return reason is None

    def build(tmp: Path) -> None:
        cfg = default_config(objective)
        cfg.output_dir, cfg.overwrite, cfg.training.disable_tqdm = str(tmp), True, True
        report = train_from_config(cfg, release_engines=False)  # the caller's engines stay
        # the report names the checkpoint where it will be once the folder is renamed
        report["checkpoint"] = str(entry / "checkpoint")
        write_json_atomic(tmp / "train_report.json", report)

    entry = _entry(name)
    what = f"the embedded world's toy {objective.upper()}"
    return cached_build(entry, build, what=what, is_built=is_built, resume=True) / "checkpoint"


def resolve_prm_model(model: str, *, train: bool = True) -> str:
    """``toy`` / ``toy-orm`` name the embedded world's reward models: their cached checkpoint,
    trained first if needed. With ``train=False`` nothing is trained or built: a toy model
    that is not trained for the current toy policy and recipe gives ``"<name> (untrained)"``.
    Anything else is kept."""
    if model not in TOY_MODELS:
        return model
    if train:
        return str(toy_prm_path(model))
    from itc.toy.build import policy_entry

    entry = _entry(model)
    if _stale(entry, TOY_MODELS[model], str(policy_entry())) is None:
        return str(entry / "checkpoint")
    return f"{model} (untrained)"
