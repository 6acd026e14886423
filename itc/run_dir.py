"""The run folder's name: every config value that changes results shapes it.

``configs/run.yaml`` names a run ``<strategy>-n<N>[-<prm>]-seed<seed>[-<hash>]`` under
``<policy>/<dataset>/``: readable names for the main groups, plus a short hash of every
other override that changes what a result means (``strategy.beam_width=2``,
``policy.sampling.temperature=0.6``, ``dataset.limit=16``, ...). How a model is served
(``policy.vllm.*``, ``prm.hf.*``, ``policy.openai.*``) and the batch size do not change results and are left out,
so a run resumes in its folder when only they change. The resolvers are registered on
import (``itc.cli.run`` imports this before ``@hydra.main``).
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from itc.cache import fingerprint

# Config groups whose values decide what a result means (as itc.runner's IDENTITY_KEYS);
# their names are already in the folder's path, their other values go into the hash.
RESULT_GROUPS = ("policy", "dataset", "strategy", "prm")
SERVING = ("vllm", "hf", "openai")  # how a model is served: never part of a result's meaning


def result_overrides(root: DictConfig) -> dict[str, Any]:
    """The job's command-line overrides that change results, as key -> resolved value."""
    out: dict[str, Any] = {}
    for override in OmegaConf.select(root, "hydra.overrides.task", default=None) or []:
        key = str(override).split("=", 1)[0].lstrip("+~")
        parts = key.split(".")
        if parts[0] not in RESULT_GROUPS or len(parts) < 2 or parts[1] in SERVING:
            continue  # a group's choice (in the path), another key, or a serving setting
        value = OmegaConf.select(root, key, default=None)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def override_hash(*, _root_: DictConfig) -> str:
    """``-<8 hex digits>`` over :func:`result_overrides`, or "" when there are none."""
    overrides = result_overrides(_root_)
    if not overrides:
        return ""
    return "-" + fingerprint(json.dumps(overrides, sort_keys=True, default=str))[:8]


def prm_tag(*, _root_: DictConfig) -> str:
    """``-<prm name>`` when a PRM is selected, else ""."""
    prm = OmegaConf.select(_root_, "prm", default=None)
    return f"-{prm.name}" if prm is not None else ""


def shard_tag(*, _root_: DictConfig) -> str:
    """``-shard<I>of<K>`` for ``shard=I/K``, else ""."""
    from itc.shard import parse_shard

    shard = parse_shard(OmegaConf.select(_root_, "shard", default=None))
    return shard.suffix if shard is not None else ""


def register_resolvers() -> None:
    """``${itc_prm:}``, ``${itc_overrides:}`` and ``${itc_shard:}`` for configs/run.yaml's
    folder names."""
    for name, fn in (("itc_prm", prm_tag), ("itc_overrides", override_hash), ("itc_shard", shard_tag)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
