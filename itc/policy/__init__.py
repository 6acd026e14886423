"""Policy backends behind one interface: ``vllm`` (in-process engine), ``hf`` and ``openai``
(OpenAI-compatible servers, :mod:`itc.policy.openai_backend`)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from itc.errors import InputError, loading
from itc.policy.base import Policy, PromptConfig, PromptTooLongError, SamplingConfig

BACKENDS = ("vllm", "hf", "openai")


def resolve_model_path(model: str) -> str:
    """``toy`` names the embedded world's policy and ``toy-ttt`` its TTT policy (each built
    and cached on first use)."""
    if model == "toy":
        from itc.toy.build import policy_path

        return str(policy_path())
    if model == "toy-ttt":
        from itc.toy.long_chain import toy_ttt_path

        return str(toy_ttt_path())
    return model


def build_policy(cfg: DictConfig | dict[str, Any], seed: int = 0) -> Policy:
    """Make a policy from a ``policy`` config group entry."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    backend = c.get("backend")
    if backend not in BACKENDS:
        raise InputError(f"policy.backend={backend!r} is not one of {', '.join(BACKENDS)}")
    model = resolve_model_path(c["model"])
    common = dict(
        name=c["name"],
        model=model,
        prompt=PromptConfig(**c.get("prompt", {})),
        sampling=SamplingConfig(**c.get("sampling", {})),
        tokenizer=c.get("tokenizer"),
        dtype=c.get("dtype", "auto"),
        max_model_len=c["max_model_len"],
        seed=seed,
        trust_remote_code=c.get("trust_remote_code", False),
    )
    if backend == "openai":
        from itc.policy.openai_backend import OpenAIPolicy
        from itc.serving import serving_config

        openai = dict(c.get("openai") or {})
        parallel = bool(openai.pop("parallel_sampling", True))
        serving = serving_config(openai, f"policy {c['name']!r}")
        with loading(f"policy {c['name']!r}", backend, model):
            return OpenAIPolicy(
                **common, serving=serving, served_model=serving.model or c["model"], parallel_sampling=parallel
            )
    with loading(f"policy {c['name']!r}", backend, model):
        if backend == "vllm":
            from itc.policy.vllm_backend import VLLMPolicy

            return VLLMPolicy(**common, **c.get("vllm", {}))
        from itc.policy.hf_backend import HFPolicy

        return HFPolicy(**common, **c.get("hf", {}))


__all__ = [
    "BACKENDS",
    "Policy",
    "PromptConfig",
    "PromptTooLongError",
    "SamplingConfig",
    "build_policy",
    "resolve_model_path",
]
