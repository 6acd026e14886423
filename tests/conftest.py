"""Shared fixtures: the embedded world's policy, one vLLM engine per test session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Commands that measure write results-log entries (itc.results_log); tests' figures stay out
# of the checkout's docs/results/.
os.environ["ITC_RESULTS_LOG"] = tempfile.mkdtemp(prefix="itc-test-results-log-")

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# Settings the tests' vLLM engine uses; every test that builds a toy vLLM policy from the
# real configs passes these overrides, so the process-wide engine cache is hit.
VLLM_TEST_OVERRIDES = ["policy.vllm.enforce_eager=true"]


def compose_app(name: str, overrides: list[str]):
    """A real app config (``configs/<name>.yaml``) composed by Hydra, with overrides."""
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def compose_run(overrides: list[str] | None = None):
    """The real ``configs/run.yaml`` composed by Hydra, with overrides."""
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="run", overrides=overrides or [], return_hydra_config=False)


# The engines of the session's fixtures (vllm_policy, vllm_prm), which every module shares.
SESSION_ENGINES: list = []


@pytest.fixture(scope="session", autouse=True)
def _stop_vllm_engines_at_session_end():
    """Stop cached engines while pytest's output streams are still open."""
    yield
    from itc.policy.vllm_backend import shutdown_engines

    shutdown_engines()


@pytest.fixture(scope="module", autouse=True)
def _stop_a_modules_own_engines():
    """Engines a test module starts for itself (other models or settings than the session's)
    stop at the module's end: cached for the whole session, they add up to more memory than
    a 24 GiB machine has once a module starts vLLM servers as well."""
    yield
    from itc.policy.vllm_backend import shutdown_engines

    shutdown_engines(keep=SESSION_ENGINES)


@pytest.fixture
def one_torch_thread():
    """Tiny shapes gain nothing from threads; spinning OpenMP threads stall on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def toy_policy_path() -> Path:
    from itc.toy.build import policy_path

    return policy_path(progress=False)


@pytest.fixture(scope="session")
def vllm_policy(toy_policy_path):
    """The session's one vLLM engine on the toy policy (real configs, eager mode)."""
    from itc.policy import build_policy

    cfg = compose_run(VLLM_TEST_OVERRIDES)
    policy = build_policy(cfg.policy, seed=cfg.seed)
    SESSION_ENGINES.append(policy.llm)
    return policy


@pytest.fixture(scope="session")
def hf_policy(toy_policy_path):
    from itc.policy import build_policy

    cfg = compose_run(["policy.backend=hf"])
    return build_policy(cfg.policy, seed=cfg.seed)


# A PRM trained in seconds by itc-train-prm's own code path (the default toy PRM takes
# minutes); shared by the PRM and strategy tests.
TINY_TRAIN = [
    "data.toy.num_problems=24",
    "data.toy.samples_per_problem=2",
    "data.toy_corrupted.num_problems=8",
    "training.max_steps=12",
    "training.per_device_train_batch_size=8",
    "training.save_steps=6",
    "training.disable_tqdm=true",
    "model.base=null",  # a fresh 1-layer backbone: the default base LM takes minutes to build
    "model.num_layers=1",
    "quality_gate.enabled=false",  # a model this small is below the toy PRM's floor by design
]


# The trained_prm fixture's recipe. The shipped config samples with transformers; the fixture
# covers the vLLM path (and reuses the session's policy engine).
TRAINED_PRM_OVERRIDES = ["policy.backend=vllm", *VLLM_TEST_OVERRIDES, *TINY_TRAIN]


@pytest.fixture(scope="session")
def trained_prm(tmp_path_factory, vllm_policy):
    """A PRM trained by itc-train-prm's own code path on solutions sampled through vLLM."""
    from prm.training.pipeline import train_from_config

    out = tmp_path_factory.mktemp("trained_prm")
    cfg = compose_app(
        "train_prm", TRAINED_PRM_OVERRIDES + [f"output_dir={out}", f"data.cache={out}/data"]
    )
    report = train_from_config(cfg, release_engines=False)
    return out, report


def prm_config(out, backend: str = "vllm"):
    """The eval_prm app's prm entry on the checkpoint in ``out``, with the tests' engine settings."""
    cfg = compose_app("eval_prm", [f"prm.model={out}/checkpoint"]).prm.copy()
    cfg.backend = backend
    cfg.vllm.enforce_eager = True
    cfg.vllm.engine_kwargs = {"kv_cache_memory_bytes": 64 << 20}
    return cfg


@pytest.fixture(scope="session")
def vllm_prm(trained_prm):
    """The session's one vLLM pooling engine on the trained test PRM."""
    from prm.scoring import build_prm

    out, _ = trained_prm
    prm = build_prm(prm_config(out, "vllm"))
    SESSION_ENGINES.append(prm.llm)
    return prm


@pytest.fixture(scope="session")
def ray_head():
    """One local Ray head for the session (127.0.0.1, 2 CPUs, no dashboard; its workers
    import this checkout), stopped at the end; its address."""
    from itc.cli.launchers import local_ray_head

    with local_ray_head(num_cpus=2) as address:
        yield address
