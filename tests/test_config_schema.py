"""The config schemas: every shipped config passes, and a wrong type or range is named."""

from pathlib import Path

import pytest

from conftest import compose_app, compose_run
from itc.config_schema import (
    AGGREGATIONS,
    BACKENDS,
    PRM_FORMATS,
    ConfigError,
    PolicySchema,
    check,
    validate_groups,
    validate_run_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _entries(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_the_schemas_choices_are_the_codes():
    from itc.policy import BACKENDS as POLICY_BACKENDS
    from prm.scoring import AGGREGATIONS as PRM_AGGREGATIONS
    from prm.scoring import BACKENDS as PRM_BACKENDS
    from prm.scoring import FORMATS

    assert set(BACKENDS) == set(POLICY_BACKENDS) == set(PRM_BACKENDS)
    assert set(AGGREGATIONS) == set(PRM_AGGREGATIONS)
    assert set(PRM_FORMATS) == set(FORMATS)


@pytest.mark.parametrize("group", ["policy", "dataset", "prm", "strategy"])
def test_every_shipped_config_is_valid(group):
    for entry in _entries(group):
        validate_run_config(compose_run([f"{group}={entry}"]))
    validate_groups(compose_app("eval_prm", []), "policy", "prm")
    validate_groups(compose_app("train_prm", []), "policy")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["policy.sampling.temperature=-1"], "policy.sampling.temperature=-1: expected a number (>= 0)"),
        (["policy.sampling.top_p=0"], "policy.sampling.top_p=0: expected a number (> 0 and <= 1)"),
        (["policy.max_model_len=0"], "policy.max_model_len=0: expected an integer (>= 1)"),
        (["policy.vllm.gpu_memory_utilization=1.5"], "policy.vllm.gpu_memory_utilization=1.5"),
        (["policy.trust_remote_code=yes"], "policy.trust_remote_code=yes: expected true or false"),
        (["dataset.levels=[0,3]"], "dataset.levels=[0, 3]: expected a list of integers or null (each >= 1 and <= 5)"),
        (["dataset.limit=true"], "dataset.limit=true: expected an integer or null (>= 1)"),
        (["n=0"], "n=0: expected an integer (>= 1)"),
        (["strategy=greedy", "n=abc"], "n=abc"),
        (["seed=-1"], "seed=-1"),
        (["prm=toy", "prm.format.type=skywork"], "prm.format.type=skywork: expected one of qwen_prm, math_shepherd, rlhflow"),
        (["strategy=deepconf", "strategy.top_logprobs=50"], "strategy.top_logprobs=50: expected an integer or null (>= 1 and <= 20)"),
        (["strategy=deepconf", "strategy.eta=0"], "strategy.eta=0: expected"),
        (["strategy=adaptive_majority", "strategy.stop=never"], "strategy.stop=never: expected one of beta, agreement"),
        (["strategy=particle_filtering", "strategy.resample_temperature=0"], "strategy.resample_temperature=0: expected"),
    ],
)
def test_a_wrong_type_or_range_names_key_value_and_what_is_allowed(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate_run_config(compose_run(overrides))
    assert message in str(e.value)


def test_all_errors_in_one_message_and_missing_keys():
    with pytest.raises(ConfigError) as e:
        validate_run_config(compose_run(["batch_size=0", "policy.sampling.max_tokens=0"]))
    assert "batch_size=0" in str(e.value) and "policy.sampling.max_tokens=0" in str(e.value)
    assert check(PolicySchema, {"name": "p", "backend": "hf", "max_model_len": 8}, "policy") == ["policy.model is missing"]
    with pytest.raises(ConfigError, match="policy.sampling.temperature=-0.5"):
        validate_groups(compose_app("eval_prm", ["policy.sampling.temperature=-0.5"]), "policy", "prm")


def test_the_strategies_shared_knobs_are_checked_before_anything_loads():
    from conftest import compose_run

    from itc.config_schema import ConfigError, validate_run_config

    cfg = compose_run(["strategy=beam_search", "prm=toy", "strategy.temperature=-1", "strategy.beam_width=0"])
    with pytest.raises(ConfigError) as e:
        validate_run_config(cfg)
    assert "strategy.temperature=-1: expected" in str(e.value) and "strategy.beam_width=0: expected" in str(e.value)
    for name in ("greedy", "majority", "best_of_n", "beam_search", "dvts", "lookahead", "self_reflection", "mcts",
                 "particle_filtering", "deepconf", "adaptive_majority"):
        validate_run_config(compose_run([f"strategy={name}", "prm=toy"]))  # every shipped entry passes


GPU_POLICIES = ["qwen2.5-math-1.5b", "llama-3.2-1b"]
GPU_PRMS = ["qwen2.5-math-prm-7b", "rlhflow-8b", "math-shepherd"]


@pytest.mark.parametrize("prm", GPU_PRMS)
@pytest.mark.parametrize("policy", GPU_POLICIES)
def test_real_policy_and_prm_share_one_card(policy, prm):
    """Two vLLM engines on one card: their fractions leave headroom for the CUDA contexts, and
    a 7-8B bf16 PRM gets a share that holds it on a 40 GB card (docs/real-models.md)."""
    cfg = compose_run([f"policy={policy}", f"prm={prm}"])
    share = cfg.policy.vllm.gpu_memory_utilization + cfg.prm.vllm.gpu_memory_utilization
    assert share <= 0.9
    assert cfg.prm.vllm.gpu_memory_utilization * 39.4 >= 15.0 + 2.5 + 1  # 8B weights, activations, KV


def test_the_24gb_prm_variant_composes_from_the_7b_config():
    cfg = compose_run(["policy=qwen2.5-math-1.5b", "prm=qwen2.5-math-prm-7b-24gb", "policy.vllm.gpu_memory_utilization=0.2"])
    base = compose_run(["prm=qwen2.5-math-prm-7b"]).prm
    assert cfg.prm.model == base.model and cfg.prm.format == base.format
    assert cfg.prm.vllm.gpu_memory_utilization + cfg.policy.vllm.gpu_memory_utilization <= 0.92
    assert cfg.prm.vllm.gpu_memory_utilization * 22.0 >= 13.2 + 1 + 0.2  # 24 GB cards show ~22-23.6 GiB
    validate_run_config(cfg)
