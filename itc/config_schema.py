"""Typed schemas of the config groups, and the one place their values are checked.

Each group (``policy``, ``dataset``, ``prm``) and each app's top-level keys is a dataclass
whose fields carry their type and allowed range. :func:`validate_run_config` and
:func:`validate_groups` check a composed Hydra config against them before anything is
loaded, so a wrong type or range stops a command within a second, naming the key, the value
and what is allowed (:class:`ConfigError`). Keys a schema does not list (a backend's extra
engine arguments, a PRM format's fields) are left to the code that reads them; of the
``strategy`` group, the shared knobs are checked here and the rest by the strategy's own
constructor, which runs before any engine starts.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from itc.errors import InputError

# These mirror the registries of the code that uses them (itc.policy.BACKENDS,
# prm.scoring.AGGREGATIONS and FORMATS; tests/test_config_schema.py checks they agree).
BACKENDS = ("vllm", "hf", "openai")
DTYPES = ("auto", "float32", "float16", "bfloat16", "half", "float")
AGGREGATIONS = ("last", "min", "product", "mean")
PRM_FORMATS = ("qwen_prm", "math_shepherd", "rlhflow")
DATASET_KINDS = ("toy", "math", "math500")


class ConfigError(InputError):
    """Settings of the wrong type or out of range; the message names each key."""


def rule(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    nonempty: bool = False,
) -> Any:
    """A schema field with its allowed range (for a list: of each element)."""
    meta = {"ge": ge, "gt": gt, "le": le, "choices": choices, "nonempty": nonempty}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SamplingSchema:
    temperature: float = rule(0.8, ge=0)
    top_p: float = rule(1.0, gt=0, le=1)
    top_k: int = rule(0, ge=0)
    repetition_penalty: float = rule(1.0, gt=0)
    max_tokens: int = rule(512, ge=1)
    max_step_tokens: int = rule(128, ge=1)


@dataclass
class PromptSchema:
    chat_template: bool = True
    system_prompt: str | None = None
    template: str = rule("{problem}", nonempty=True)
    step_delimiter: str = rule("\n\n", nonempty=True)


@dataclass
class VLLMSchema:
    gpu_memory_utilization: float = rule(0.5, gt=0, le=1)
    enforce_eager: bool = False
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = rule(1, ge=1)
    engine_kwargs: dict[str, Any] | None = None
    env: dict[str, Any] | None = None


@dataclass
class HFSchema:
    batch_size: int = rule(16, ge=1)
    device: str | None = None


@dataclass
class OpenAISchema:
    """``policy.openai`` / ``prm.openai``: the servers of ``backend=openai`` (itc/serving.py)."""

    base_urls: list[str] | None = None
    model: str | None = None
    api_key: str = "EMPTY"
    timeout_s: float = rule(600.0, gt=0)
    max_retries: int = rule(5, ge=0)
    backoff_s: float = rule(0.5, ge=0)
    max_concurrency: int = rule(1024, ge=1)
    parallel_sampling: bool = True


@dataclass
class PolicyHFSchema(HFSchema):
    prefix_cache_mib: float = rule(0, ge=0)


@dataclass
class PolicySchema:
    """``configs/policy/*.yaml``."""

    name: str = rule(nonempty=True)
    backend: str = rule(choices=BACKENDS)
    model: str = rule(nonempty=True)
    max_model_len: int = rule(ge=1)
    tokenizer: str | None = None
    dtype: str = rule("auto", choices=DTYPES)
    trust_remote_code: bool = False
    prompt: PromptSchema | None = None
    sampling: SamplingSchema | None = None
    vllm: VLLMSchema | None = None
    hf: PolicyHFSchema | None = None
    openai: OpenAISchema | None = None


@dataclass
class PRMFormatSchema:
    type: str = rule(choices=PRM_FORMATS)


@dataclass
class PRMSchema:
    """``configs/prm/*.yaml``."""

    name: str = rule(nonempty=True)
    backend: str = rule(choices=BACKENDS)
    model: str = rule(nonempty=True)
    max_model_len: int = rule(ge=1)
    format: PRMFormatSchema = rule()
    tokenizer: str | None = None
    dtype: str = rule("auto", choices=DTYPES)
    trust_remote_code: bool = False
    aggregation: str = rule("min", choices=AGGREGATIONS)
    vllm: VLLMSchema | None = None
    hf: HFSchema | None = None
    openai: OpenAISchema | None = None


@dataclass
class DatasetSchema:
    """``configs/dataset/*.yaml`` (``num_problems``, ``seed`` and ``long_chain_steps`` are the
    toy world's; ``hub_name``, ``split``, ``path`` and ``subjects`` MATH's)."""

    name: str = rule(nonempty=True)
    kind: str = rule(choices=DATASET_KINDS)
    limit: int | None = rule(None, ge=1)
    levels: list[int] | None = rule(None, ge=1, le=5)
    num_problems: int | None = rule(None, ge=1)
    seed: int = rule(0, ge=0)
    long_chain_steps: int | None = rule(None, ge=1)
    hub_name: str | None = None
    split: str | None = None
    path: str | None = None
    subjects: list[str] | None = None


@dataclass
class StrategySchema:
    """The knobs ``configs/strategy/*.yaml`` share, where a strategy has them (each
    strategy's constructor checks the rest, such as its ``selection``)."""

    temperature: float | None = rule(None, ge=0)
    beam_width: int | None = rule(None, ge=1)
    max_steps: int | None = rule(None, ge=1)
    lookahead: int | None = rule(None, ge=0)
    rounds: int | None = rule(None, ge=0)
    threshold: float | None = rule(None, ge=0, le=1)
    children: int | None = rule(None, ge=1)
    rollouts: int | None = rule(None, ge=0)
    max_depth: int | None = rule(None, ge=1)
    check_equations: bool | None = None
    resample_temperature: float | None = rule(None, gt=0)
    gibbs_rounds: int | None = rule(None, ge=1)
    mode: str | None = rule(None, choices=("backtrack", "revise", "offline", "online"))
    eta: float | None = rule(None, gt=0, le=100)
    window: int | None = rule(None, ge=1)
    top_logprobs: int | None = rule(None, ge=1, le=20)
    warmup: int | None = rule(None, ge=1)
    round_size: int | None = rule(None, ge=1)
    stop: str | None = rule(None, choices=("beta", "agreement"))
    min_votes: int | None = rule(None, ge=1)


@dataclass
class RunSchema:
    """``configs/run.yaml``'s own keys."""

    n: int = rule(ge=1)
    seed: int = rule(0, ge=0)
    batch_size: int = rule(64, ge=1)
    concurrency: int = rule(1, ge=1)
    score_candidates: bool = True
    name: str = rule("default", nonempty=True)
    shard: str | None = None  # "I/K", parsed by itc.shard.parse_shard


@dataclass
class GatewaySchema:
    """``configs/gateway.yaml``'s ``gateway`` block (docs/gateway.md)."""

    host: str = rule("127.0.0.1", nonempty=True)
    port: int = rule(8000, ge=0, le=65535)
    model_name: str = rule("itc", nonempty=True)
    max_n: int = rule(64, ge=1)
    max_tokens: int = rule(4096, ge=1)
    max_concurrent: int = rule(64, ge=1)
    max_queue: int = rule(256, ge=0)
    batch_window_ms: float = rule(50, ge=0)
    batch_max_wait_ms: float = rule(1000, ge=0)
    log_prompts: bool = False


GROUPS: dict[str, type] = {"policy": PolicySchema, "prm": PRMSchema, "dataset": DatasetSchema}

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _describe(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in inner) + " or null"
    if typing.get_origin(tp) is list:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if typing.get_origin(tp) is dict or is_dataclass(tp):
        return "a mapping"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _range_text(meta: dict[str, Any]) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    parts = [f"{op} {meta[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<=")) if meta.get(k) is not None]
    if meta.get("nonempty"):
        parts.append("not empty")
    return " and ".join(parts)


def _type_ok(tp: Any, value: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, value) for a in args)
    if tp is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(args[0], v) for v in value)
    if origin is dict or is_dataclass(tp):
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, tp)


def _in_range(meta: dict[str, Any], value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, list):
        return all(_in_range(meta, v) for v in value)
    if meta.get("choices") and value not in meta["choices"]:
        return False
    if meta.get("nonempty") and value == "":
        return False
    if isinstance(value, (int, float)):
        for k, ok in (("ge", value.__ge__), ("gt", value.__gt__), ("le", value.__le__)):
            if meta.get(k) is not None and not ok(meta[k]):
                return False
    return True


def check(schema: type, values: Any, prefix: str) -> list[str]:
    """Every problem of ``values`` (a plain dict) against ``schema``, one message each."""
    if not isinstance(values, dict):
        return [f"{prefix}={_show(values)}: expected a mapping"]
    errors: list[str] = []
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in values:
            if f.default is MISSING and f.default_factory is MISSING:
                errors.append(f"{key} is missing")
            continue
        value, tp = values[f.name], hints[f.name]
        meta = dict(f.metadata)
        if not _type_ok(tp, value) or not _in_range(meta, value):
            allowed = _describe(tp) if not meta.get("choices") else ""
            if _range_text(meta):
                each = "each " if typing.get_origin(tp) is list or list in map(typing.get_origin, typing.get_args(tp)) else ""
                allowed = f"{allowed} ({each}{_range_text(meta)})" if allowed else _range_text(meta)
            errors.append(f"{key}={_show(value)}: expected {allowed}")
        elif value is not None:
            nested = [a for a in (tp, *typing.get_args(tp)) if is_dataclass(a)]
            if nested:
                errors.extend(check(nested[0], value, key))
    return errors


def _container(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def _raise(errors: list[str]) -> None:
    if errors:
        raise ConfigError("invalid settings: " + "; ".join(errors))


def validate_groups(cfg: DictConfig | dict[str, Any], *groups: str) -> None:
    """Check the named groups of ``cfg`` (those present and not null) and its ``seed``."""
    c = {k: _container(cfg[k]) if isinstance(cfg[k], DictConfig) else cfg[k] for k in (*groups, "seed") if k in cfg}
    errors = []
    for group in groups:
        if c.get(group) is not None:
            errors += check(GROUPS[group], c[group], group)
    if "seed" in c and not (_type_ok(int, c["seed"]) and c["seed"] >= 0):
        errors.append(f"seed={_show(c['seed'])}: expected an integer (>= 0)")
    _raise(errors)


def validate_run_config(cfg: DictConfig | dict[str, Any]) -> None:
    """Check an ``itc-run`` config: its own keys, ``strategy.n`` and every group."""
    c = _container(cfg)
    errors = check(RunSchema, {k: c[k] for k in c if k in {f.name for f in fields(RunSchema)}}, "")
    n = (c.get("strategy") or {}).get("n")
    if not any(e.startswith("n=") for e in errors) and not (_type_ok(int, n) and n >= 1):
        errors.append(f"strategy.n={_show(n)}: expected an integer (>= 1)")
    if c.get("shard") is not None and not errors:
        from itc.shard import parse_shard

        try:
            parse_shard(c["shard"])
        except InputError as e:
            errors.append(str(e))
    for group, schema in {**GROUPS, "strategy": StrategySchema}.items():
        if c.get(group) is not None:
            errors += check(schema, c[group], group)
    _raise(errors)


def validate_gateway_config(cfg: DictConfig | dict[str, Any]) -> None:
    """Check an ``itc-gateway`` config: ``n``, ``seed``, the groups and the ``gateway`` block."""
    c = _container(cfg)
    errors = check(RunSchema, {k: c[k] for k in ("n", "seed") if k in c}, "")
    n = (c.get("strategy") or {}).get("n")
    if not any(e.startswith("n=") for e in errors) and not (_type_ok(int, n) and n >= 1):
        errors.append(f"strategy.n={_show(n)}: expected an integer (>= 1)")
    for group, schema in {"policy": PolicySchema, "prm": PRMSchema, "strategy": StrategySchema}.items():
        if c.get(group) is not None:
            errors += check(schema, c[group], group)
    errors += check(GatewaySchema, c.get("gateway"), "gateway")
    _raise(errors)


__all__ = [
    "AGGREGATIONS",
    "BACKENDS",
    "ConfigError",
    "DatasetSchema",
    "GatewaySchema",
    "PRMSchema",
    "PolicySchema",
    "RunSchema",
    "StrategySchema",
    "check",
    "validate_gateway_config",
    "validate_groups",
    "validate_run_config",
]
