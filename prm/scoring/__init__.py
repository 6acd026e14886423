"""PRM scoring behind one interface: ``PRM.score(problems, candidates) -> per-step scores``.

- Formats (``prm.format.type``): ``qwen_prm`` (Qwen2.5-Math-PRM), ``math_shepherd``,
  ``rlhflow``; see :mod:`prm.scoring.formats`.
- Backends (``prm.backend``): ``vllm`` (pooling runner), ``hf`` (transformers) and
  ``openai`` (vLLM servers' ``/pooling``, :mod:`prm.scoring.openai_backend`).
- Aggregations over steps: ``last``, ``min``, ``product``, ``mean`` (:func:`aggregate`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from itc.errors import InputError, loading

from prm.scoring.aggregate import AGGREGATIONS, aggregate

if TYPE_CHECKING:
    from prm.scoring.base import PRM

# The rest loads torch and transformers: imported on first use (PEP 562), so that what only
# needs the aggregations (the strategies' settings checks) starts in a blink.
_LAZY = {
    "PRM": "prm.scoring.base",
    "PRMInputTooLongError": "prm.scoring.base",
    "PRM_INPUT_TOO_LONG": "prm.scoring.base",
    "TooLongScores": "prm.scoring.base",
    "mark_too_long": "prm.scoring.base",
    "FORMATS": "prm.scoring.formats",
    "Encoded": "prm.scoring.formats",
    "MathShepherdFormat": "prm.scoring.formats",
    "PRMFormat": "prm.scoring.formats",
    "QwenPRMFormat": "prm.scoring.formats",
    "RLHFlowFormat": "prm.scoring.formats",
    "build_format": "prm.scoring.formats",
    "Qwen2ForProcessRewardModel": "prm.scoring.modeling",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


BACKENDS = ("vllm", "hf", "openai")


def build_prm(cfg: DictConfig | dict[str, Any], seed: int = 0) -> "PRM":
    """Make a PRM from a ``prm`` config group entry."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    from prm.scoring.formats import build_format
    from prm.toy import resolve_prm_model

    backend = c.get("backend")
    if backend not in BACKENDS:
        raise InputError(f"prm.backend={backend!r} is not one of {', '.join(BACKENDS)}")
    common = dict(
        name=c["name"],
        model=resolve_prm_model(c["model"]),
        format=build_format(c["format"]),
        tokenizer=c.get("tokenizer"),
        dtype=c.get("dtype", "auto"),
        max_model_len=c["max_model_len"],
        aggregation=c.get("aggregation", "min"),
        trust_remote_code=c.get("trust_remote_code", False),
    )
    with loading(f"prm {c['name']!r}", backend, common["model"]):
        if backend == "openai":
            from itc.serving import serving_config
            from prm.scoring.openai_backend import OpenAIPRM

            openai = {k: v for k, v in (c.get("openai") or {}).items() if k != "parallel_sampling"}  # the policy's
            serving = serving_config(openai, f"prm {c['name']!r}")
            return OpenAIPRM(**common, serving=serving, served_model=serving.model or c["model"])
        if backend == "vllm":
            from prm.scoring.vllm_backend import VLLMPRM

            return VLLMPRM(**common, seed=seed, **(c.get("vllm") or {}))
        from prm.scoring.hf_backend import HFPRM

        return HFPRM(**common, **(c.get("hf") or {}))


__all__ = [
    "AGGREGATIONS",
    "BACKENDS",
    "FORMATS",
    "PRM",
    "Encoded",
    "MathShepherdFormat",
    "PRMFormat",
    "PRMInputTooLongError",
    "PRM_INPUT_TOO_LONG",
    "TooLongScores",
    "mark_too_long",
    "Qwen2ForProcessRewardModel",
    "QwenPRMFormat",
    "RLHFlowFormat",
    "aggregate",
    "build_format",
    "build_prm",
]
