"""itc-run end to end: Hydra composing the real configs, results on disk, resume, errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from conftest import FIXTURES, VLLM_TEST_OVERRIDES, compose_run
from itc.policy import PromptTooLongError
from itc.runner import ConfigMismatchError, run_experiment

REPO = Path(__file__).resolve().parents[1]


def test_every_config_in_every_group_composes():
    for group in ("policy", "dataset", "strategy"):
        for path in sorted((REPO / "configs" / group).glob("*.yaml")):
            cfg = compose_run([f"{group}={path.stem}"])
            assert cfg[group].name == path.stem or group == "policy"
            assert cfg[group].name


def test_unknown_option_is_rejected_by_hydra():
    with initialize_config_module(config_module="configs", version_base="1.3"):
        with pytest.raises(Exception, match="strategy/beam_of_dreams|Could not find"):
            compose(config_name="run", overrides=["strategy=beam_of_dreams"])
        with pytest.raises(Exception, match="not_a_key"):
            compose(config_name="run", overrides=["not_a_key=3"])


@pytest.mark.vllm
def test_a_run_repeats_line_by_line_whatever_the_batch_size(tmp_path, vllm_policy):
    """The same run twice, and with another batch size (so other requests share the engine's
    batches), writes the same samples and answers: each problem samples under its own seed."""

    def answers(run_dir):
        records = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
        return [(r["problem_id"], r["chosen_answer"], [(c["text"], c["answer"]) for c in r["candidates"]]) for r in records]

    runs = {}
    for name, batch_size in [("first", 8), ("again", 8), ("batch2", 2)]:
        cfg = compose_run(
            VLLM_TEST_OVERRIDES
            # the hardest level, sampled hot, so that samples differ (a repeat is no accident)
            + ["dataset.num_problems=8", "dataset.levels=[5]", "strategy=majority", "strategy.temperature=1.5", "n=4"]
            + [f"batch_size={batch_size}"]
        )
        run_experiment(cfg, tmp_path / name, policy=vllm_policy)
        runs[name] = answers(tmp_path / name)
    assert len(runs["first"]) == 8
    assert runs["first"] == runs["again"] == runs["batch2"]
    assert any(len({text for text, _ in cands}) > 1 for _, _, cands in runs["first"])  # sampled, not greedy


@pytest.mark.vllm
def test_run_writes_results_and_metrics_then_resumes(tmp_path, vllm_policy):
    cfg = compose_run(VLLM_TEST_OVERRIDES + ["dataset.num_problems=10", "n=4", "batch_size=4"])
    metrics = run_experiment(cfg, tmp_path, policy=vllm_policy)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 10
    rec = json.loads(lines[0])
    assert len(rec["candidates"]) == 4
    assert {"problem_id", "chosen_answer", "correct", "completion_tokens", "level"} <= rec.keys()
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == metrics
    for key in ("strategy", "n", "accuracy", "accuracy_by_level", "num_problems", "completion_tokens", "wall_seconds"):
        assert key in metrics
    assert metrics["strategy"] == "majority" and metrics["n"] == 4 and metrics["num_problems"] == 10
    assert metrics["accuracy"] == sum(json.loads(x)["correct"] for x in lines) / 10

    # a crash mid-write: drop the last two problems and leave half a line behind
    kept = lines[:8]
    (tmp_path / "results.jsonl").write_text("\n".join(kept) + "\n" + lines[8][:40])
    metrics2 = run_experiment(cfg, tmp_path, policy=vllm_policy)
    lines2 = (tmp_path / "results.jsonl").read_text().splitlines()
    assert lines2[:8] == kept  # nothing already written is lost or rewritten
    assert len(lines2) == 10 and len({json.loads(x)["problem_id"] for x in lines2}) == 10
    assert metrics2["num_problems"] == 10

    # a resume with a different configuration is refused, naming what differs
    other = compose_run(VLLM_TEST_OVERRIDES + ["dataset.num_problems=10", "n=8"])
    with pytest.raises(ConfigMismatchError, match="strategy.n"):
        run_experiment(other, tmp_path, policy=vllm_policy)
    # how the policy is served is not part of what a run means: a resume may change it
    served = compose_run(VLLM_TEST_OVERRIDES + ["dataset.num_problems=10", "policy.vllm.engine_kwargs.block_size=64"])
    assert run_experiment(served, tmp_path, policy=vllm_policy)["num_problems"] == 10


@pytest.mark.vllm
def test_math500_local_file_runs_with_toy_policy(tmp_path, vllm_policy):
    cfg = compose_run(VLLM_TEST_OVERRIDES + ["dataset=math500", f"dataset.path={FIXTURES / 'math500_sample.jsonl'}", "strategy=greedy"])
    metrics = run_experiment(cfg, tmp_path, policy=vllm_policy)
    assert metrics["num_problems"] == 12 and metrics["dataset"] == "math500"
    assert 0.0 <= metrics["accuracy"] <= 0.25  # a toy policy cannot do MATH


@pytest.mark.vllm
def test_over_long_prompt_fails_before_any_work_naming_the_problem(tmp_path, vllm_policy):
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps({"problem": "x" * 5000, "answer": "1", "unique_id": "long-one"}) + "\n")
    cfg = compose_run(VLLM_TEST_OVERRIDES + ["dataset=math500", f"dataset.path={path}"])
    with pytest.raises(PromptTooLongError, match="long-one"):
        run_experiment(cfg, tmp_path / "run", policy=vllm_policy)
    assert not (tmp_path / "run" / "results.jsonl").exists() or not (tmp_path / "run" / "results.jsonl").read_text()


def _itc_run(args, cwd):
    exe = Path(sys.executable).with_name("itc-run")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def test_cli_runs_and_reports_errors(tmp_path, toy_policy_path):
    # the real entry point, on the transformers backend (no second vLLM engine)
    ok = _itc_run(["policy.backend=hf", "strategy=greedy", "dataset.num_problems=5", f"hydra.run.dir={tmp_path / 'r'}"], tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["num_problems"] == 5

    bad_key = _itc_run(["no_such_option=1"], tmp_path)
    assert bad_key.returncode != 0 and "no_such_option" in bad_key.stderr

    missing = _itc_run(["policy.backend=hf", "dataset=math500", "dataset.path=/nonexistent/m.jsonl", f"hydra.run.dir={tmp_path / 'm'}"], tmp_path)
    assert missing.returncode == 2 and "/nonexistent/m.jsonl" in missing.stderr

    no_prm = _itc_run(["policy.backend=hf", "strategy=beam_search", f"hydra.run.dir={tmp_path / 'b'}"], tmp_path)
    assert no_prm.returncode == 2 and "needs a process reward model: add prm=" in no_prm.stderr
    bad_selection = _itc_run(
        ["policy.backend=hf", "strategy=best_of_n", "strategy.selection=best", "prm=toy", f"hydra.run.dir={tmp_path / 's'}"], tmp_path
    )
    assert bad_selection.returncode == 2
    assert "strategy 'best_of_n': selection 'best' is not one of highest" in bad_selection.stderr
    assert not (tmp_path / "s" / "results.jsonl").exists()

    helped = _itc_run(["--help"], tmp_path)
    assert helped.returncode == 0
    assert re.search(r"strategy: .*greedy.*majority", helped.stdout) and "resumes" in helped.stdout


def test_a_resume_with_a_retrained_prm_under_the_same_name_is_refused(tmp_path):
    """Results scored by a PRM are tied to its weights, not only to its config entry."""
    from omegaconf import OmegaConf

    from itc.runner import _check_resume

    ckpt = tmp_path / "prm" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"weights")
    cfg = OmegaConf.create({"policy": {"name": "toy"}, "dataset": {"name": "toy"}, "strategy": {"name": "best_of_n"},
                            "prm": {"model": str(ckpt)}, "seed": 0})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _check_resume(run_dir, cfg)
    _check_resume(run_dir, cfg)  # the same weights: resumes
    (ckpt / "model.safetensors").write_bytes(b"retrained weights")
    with pytest.raises(ConfigMismatchError, match="prm_weights"):
        _check_resume(run_dir, cfg)
