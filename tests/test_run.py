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
from fakes import ScriptedPolicy
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
def test_a_search_repeats_line_by_line_whatever_the_batch_size(tmp_path, vllm_policy, vllm_prm):
    """Beam search's step-level requests each carry their own seed (problem, call, parent's
    place): the same search with another batch size writes the same beams, through vLLM
    (whole prefills: configs/policy/toy.yaml) and the PRM's engine."""
    runs = {}
    for name, batch_size in [("first", 6), ("batch2", 2)]:
        cfg = compose_run(
            VLLM_TEST_OVERRIDES
            + ["dataset.num_problems=6", "dataset.levels=[4]", "strategy=beam_search", "strategy.temperature=1.5", "n=4"]
            + [f"batch_size={batch_size}"]
        )
        run_experiment(cfg, tmp_path / name, policy=vllm_policy, prm=vllm_prm)
        records = [json.loads(x) for x in (tmp_path / name / "results.jsonl").read_text().splitlines()]
        runs[name] = [(r["problem_id"], r["chosen_answer"], [c["text"] for c in r["candidates"]]) for r in records]
    assert len(runs["first"]) == 6 and runs["first"] == runs["batch2"]
    assert any(len(set(texts)) > 1 for _, _, texts in runs["first"])


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
    """The real CLI, from this checkout (PYTHONPATH is kept)."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    cmd = [sys.executable, "-m", "itc.cli.run", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


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

    from itc.runner import _check_resume, _identity, _record_run

    ckpt = tmp_path / "prm" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"weights")
    cfg = OmegaConf.create({"policy": {"name": "toy"}, "dataset": {"name": "toy"}, "strategy": {"name": "best_of_n"},
                            "prm": {"model": str(ckpt)}, "seed": 0})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _record_run(run_dir, cfg, _identity(cfg))
    (run_dir / "results.jsonl").write_text('{"problem_id": "a"}\n')
    _check_resume(run_dir, cfg)  # the same weights: resumes
    (ckpt / "model.safetensors").write_bytes(b"retrained weights")
    with pytest.raises(ConfigMismatchError, match="prm_weights"):
        _check_resume(run_dir, cfg)


def test_a_runs_identity_never_trains_the_toy_prm(tmp_path, monkeypatch):
    """Working out what a run means names a toy PRM not trained yet; training waits for the
    place where the PRM is loaded (prm.scoring.build_prm)."""
    from omegaconf import OmegaConf

    import itc.toy.build
    import prm.training.pipeline
    from itc.runner import _check_resume, _identity

    def no_training(*args, **kwargs):
        raise AssertionError("the identity trained a model")

    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path / "cache"))  # nothing built there
    monkeypatch.setattr(prm.training.pipeline, "train_from_config", no_training)
    monkeypatch.setattr(itc.toy.build, "build_checked", no_training)
    cfg = OmegaConf.create({"policy": {"name": "toy"}, "dataset": {"name": "toy"}, "strategy": {"name": "best_of_n"},
                            "prm": {"model": "toy"}, "seed": 0})
    assert _identity(cfg)["prm_weights"] == "toy (untrained)"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_config.json").write_text(json.dumps({**_identity(cfg), "prm_weights": "older weights"}))
    (run_dir / "results.jsonl").write_text('{"problem_id": "a"}\n')
    with pytest.raises(ConfigMismatchError, match="prm_weights"):  # made with a PRM since gone
        _check_resume(run_dir, cfg)


def test_a_run_records_the_toy_prm_it_loaded_not_the_untrained_name(tmp_path, monkeypatch):
    """Training happens where the PRM is loaded; the run's record then names its weights."""
    import prm.scoring
    from fakes import StepPRM
    from itc.cache import checkpoint_fingerprint
    from itc.toy.build import policy_entry
    from prm import toy

    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path / "cache"))
    entry = tmp_path / "cache" / "prm" / "toy-prm"
    loaded = []

    def build_prm(cfg, seed=0):
        """As the real one does for prm.model=toy: train the toy PRM (here: write one), load it."""
        (entry / "checkpoint").mkdir(parents=True)
        (entry / "checkpoint" / "model.safetensors").write_bytes(b"weights")
        report = {"policy_model": str(policy_entry()), "config": toy.default_recipe("prm")}
        (entry / "train_report.json").write_text(json.dumps(report))
        loaded.append(cfg.model)
        return StepPRM()

    monkeypatch.setattr(prm.scoring, "build_prm", build_prm)
    cfg = compose_run(["strategy=greedy", "prm=toy", "dataset.num_problems=2"])
    run_experiment(cfg, tmp_path / "run", policy=ScriptedPolicy(["\\boxed{1}"]))
    assert loaded == ["toy"]
    recorded = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert recorded["prm_weights"] == checkpoint_fingerprint(str(entry / "checkpoint")) != "toy (untrained)"


def test_a_failed_run_never_blocks_its_fix_and_a_refused_run_keeps_the_record(tmp_path, toy_policy_path):
    from itc.results import write_json_atomic

    run = tmp_path / "r"
    common = ["policy.backend=hf", "strategy=greedy", "dataset.num_problems=2", f"hydra.run.dir={run}"]
    failed = _itc_run([*common, f"policy.model={tmp_path / 'no-model'}"], tmp_path)
    assert failed.returncode == 2 and "the hf backend failed to load" in failed.stderr
    assert not (run / "run_config.json").exists() and not (run / ".hydra").exists()
    # the state such a run used to leave: another configuration recorded, no results
    write_json_atomic(run / "run_config.json", {"policy": {"name": "other"}, "seed": 7})
    ok = _itc_run(common, tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert json.loads((run / "run_config.json").read_text())["seed"] == 0
    config, overrides = (run / ".hydra" / "config.yaml").read_text(), (run / ".hydra" / "overrides.yaml").read_text()
    assert "backend: hf" in config and "strategy=greedy" in overrides
    # a refused run leaves the record of the results there as it was
    refused = _itc_run([*common, "seed=1"], tmp_path)
    assert refused.returncode == 2 and "differs in: seed" in refused.stderr
    assert (run / ".hydra" / "config.yaml").read_text() == config
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides
    assert oct((run / "metrics.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.vllm
def test_a_long_problem_loses_no_batch(tmp_path, vllm_policy, vllm_prm, trained_prm, caplog):
    """One problem whose prompt nearly fills the context, between two short ones, in one
    batch of best-of-N with the PRM: its candidates' PRM inputs do not fit the PRM's
    context and score 0, it is flagged truncated_by_context with a warning naming it, and
    all three problems are written."""
    from itc.toy import generate

    short = [p.to_problem() for p in generate(2, seed=3)]
    room = vllm_policy.max_model_len - 10
    filler, text = " 1 + 1 = 2 .", short[0].problem
    while vllm_policy.count_tokens(vllm_policy.format_prompt(text + filler)) <= room:
        text += filler
    records = [
        {"problem": short[0].problem, "answer": short[0].answer, "unique_id": "short-0"},
        {"problem": text, "answer": short[0].answer, "unique_id": "long-one"},
        {"problem": short[1].problem, "answer": short[1].answer, "unique_id": "short-1"},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, _ = trained_prm
    cfg = compose_run(
        VLLM_TEST_OVERRIDES
        + ["dataset=math500", f"dataset.path={path}", "strategy=best_of_n", "n=2", "batch_size=3",
           "prm=toy", f"prm.model={out}/checkpoint"]
    )
    before = vllm_prm.inputs_too_long
    with caplog.at_level("WARNING"):
        metrics = run_experiment(cfg, tmp_path / "run", policy=vllm_policy, prm=vllm_prm)
    lines = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in lines] == ["short-0", "long-one", "short-1"] and metrics["num_problems"] == 3
    flags = {r["problem_id"]: r["truncated_by_context"] for r in lines}
    assert flags == {"short-0": False, "long-one": True, "short-1": False}
    assert "problem 'long-one'" in caplog.text
    long_one = lines[1]
    assert vllm_prm.inputs_too_long > before
    assert any(c["step_scores"] and set(c["step_scores"]) == {0.0} for c in long_one["candidates"])
    assert all(c["step_scores"] for r in (lines[0], lines[2]) for c in r["candidates"])


def _toy_dataset(tmp_path, count: int, seed: int) -> Path:
    from itc.toy import generate

    probs = [p.to_problem() for p in generate(count, seed=seed, levels=(3,))]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps({"problem": p.problem, "answer": p.answer, "unique_id": p.id}) + "\n" for p in probs))
    return path


@pytest.mark.vllm
def test_beam_search_completes_when_prm_inputs_outgrow_the_prm_context(tmp_path, vllm_policy, vllm_prm, trained_prm, monkeypatch):
    """The session's PRM engine, its context cut (the PRM's own check; a second engine with a
    small max_model_len would cost another engine start) to a step or two past each problem:
    beam search runs to the end, and each beam whose PRM input no longer fits ends there,
    its new steps scored 0 and recorded as prm_input_too_long."""
    path = _toy_dataset(tmp_path, 3, seed=5)
    out, _ = trained_prm
    cfg = compose_run(
        VLLM_TEST_OVERRIDES
        + ["dataset=math500", f"dataset.path={path}", "strategy=beam_search", "n=4", "prm=toy",
           f"prm.model={out}/checkpoint"]
    )
    problems = [json.loads(line)["problem"] for line in path.read_text().splitlines()]
    room = max(len(vllm_prm.encode(p, ["x"]).input_ids) for p in problems) + 8
    monkeypatch.setattr(vllm_prm, "max_model_len", room)
    before = vllm_prm.inputs_too_long
    metrics = run_experiment(cfg, tmp_path / "run", policy=vllm_policy, prm=vllm_prm)
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert metrics["num_problems"] == len(records) == 3 and vllm_prm.inputs_too_long > before
    ended = [c for r in records for c in r["candidates"] if c["meta"].get("prm_input_too_long")]
    assert ended and all(c["step_scores"][-1] == 0.0 and not c["finished"] for c in ended)
    assert all(len(c["steps"]) <= 3 for r in records for c in r["candidates"])  # none went on


@pytest.mark.vllm
def test_beam_search_completes_when_the_policy_prompt_outgrows_the_context(tmp_path, vllm_policy, vllm_prm, trained_prm, monkeypatch):
    """The policy's context cut to a few steps past each prompt: beams whose prompt no longer
    fits end (as candidates) and the run completes with every problem written."""
    path = _toy_dataset(tmp_path, 3, seed=6)
    out, _ = trained_prm
    cfg = compose_run(
        VLLM_TEST_OVERRIDES
        + ["dataset=math500", f"dataset.path={path}", "strategy=beam_search", "n=4", "prm=toy",
           f"prm.model={out}/checkpoint"]
    )
    problems = [json.loads(line)["problem"] for line in path.read_text().splitlines()]
    room = max(vllm_policy.count_tokens(vllm_policy.format_prompt(p)) for p in problems) + 24
    monkeypatch.setattr(vllm_policy, "max_model_len", room)
    metrics = run_experiment(cfg, tmp_path / "run", policy=vllm_policy, prm=vllm_prm)
    records = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert metrics["num_problems"] == len(records) == 3
    assert all(r["candidates"] for r in records)
    assert all(r["truncated_by_context"] for r in records)
    full = [c for r in records for c in r["candidates"] if c["meta"].get("policy_context_full")]
    assert full and all(not c["finished"] and c["steps"] for c in full)


class FailOn:
    """A strategy (``strategy._target_=test_run.FailOn``) that fails on the problem ids in
    ``FailOn.bad``, whichever batch they are in."""

    name = "fail_on"
    needs_prm = False
    bad: set[str] = set()

    def __init__(self, n: int = 1) -> None:
        self.n = n

    def run(self, problems, policy, prm=None):
        from itc.types import StrategyResult

        if any(p.id in FailOn.bad for p in problems):
            raise RuntimeError(f"cannot solve {sorted(FailOn.bad)}")
        return [StrategyResult(p.id, [], None, None) for p in problems]


def test_a_failing_problem_loses_no_other_problem_of_its_batch(tmp_path, monkeypatch):
    cfg = compose_run(["dataset=math500", f"dataset.path={FIXTURES / 'math500_sample.jsonl'}", "strategy=greedy",
                       "strategy._target_=test_run.FailOn", "batch_size=5"])
    ids = [json.loads(x)["unique_id"] for x in (FIXTURES / "math500_sample.jsonl").read_text().splitlines()]
    monkeypatch.setattr(FailOn, "bad", {ids[6]})
    with pytest.raises(RuntimeError, match="cannot solve"):
        run_experiment(cfg, tmp_path, policy=ScriptedPolicy())
    written = [json.loads(x)["problem_id"] for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert written == [i for i in ids if i != ids[6]]  # the batch after it ran too
    monkeypatch.setattr(FailOn, "bad", set())
    assert run_experiment(cfg, tmp_path, policy=ScriptedPolicy())["num_problems"] == 12
    assert sorted(json.loads(x)["problem_id"] for x in (tmp_path / "results.jsonl").read_text().splitlines()) == sorted(ids)


def _run_dirs(*sweep: list[str]) -> list[str]:
    """hydra.sweep.subdir of each job, as Hydra composes it from configs/run.yaml."""
    from omegaconf import OmegaConf

    import itc.run_dir  # noqa: F401  (the resolvers, as itc-run registers them)

    out = []
    for overrides in sweep:
        with initialize_config_module(config_module="configs", version_base="1.3"):
            cfg = compose(config_name="run", overrides=overrides, return_hydra_config=True)
            out.append(OmegaConf.select(cfg, "hydra.sweep.subdir"))
    return out


def test_every_value_that_changes_results_shapes_the_run_folder():
    base = ["strategy=best_of_n", "n=4"]
    dirs = _run_dirs(
        base + ["prm=toy"], base + ["prm=toy-orm"],
        base + ["prm=toy", "strategy.selection=highest"], base + ["prm=toy", "strategy.selection=majority"],
        base + ["prm=toy", "policy.sampling.temperature=0.6"], base + ["prm=toy", "policy=llama-3.2-1b"],
        ["strategy=beam_search", "n=4", "prm=toy", "strategy.beam_width=2"], ["strategy=beam_search", "n=4", "prm=toy", "strategy.beam_width=1"],
    )
    assert len(set(dirs)) == len(dirs)
    assert dirs[0] == "toy/toy/best_of_n-n4-toy-seed0" and dirs[1] == "toy/toy/best_of_n-n4-toy-orm-seed0"
    assert re.fullmatch(r"toy/toy/beam_search-n4-toy-seed0-[0-9a-f]{8}", dirs[6])
    # how a model is served does not change results: the same folder, so a run resumes there
    assert _run_dirs(base + ["prm=toy", "policy.vllm.enforce_eager=true", "prm.hf.batch_size=2", "batch_size=8"]) == dirs[:1]


@pytest.mark.vllm
def test_a_sweep_over_prm_knobs_lands_in_distinct_folders(tmp_path, trained_prm):
    """itc-run -m, Hydra composing the real configs: two jobs, two folders, both run."""
    out, _ = trained_prm
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    args = [sys.executable, "-m", "itc.cli.run", "-m", "name=cmp", "strategy=beam_search", "n=2",
            "strategy.beam_width=1,2", "strategy.max_steps=3", "prm=toy", f"prm.model={out}/checkpoint",
            "prm.backend=hf", "policy.backend=hf", "dataset.limit=2", f"hydra.sweep.dir={tmp_path / 'cmp'}"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    found = sorted((tmp_path / "cmp").rglob("metrics.json"))
    assert len(found) == 2 and found[0].parent != found[1].parent
    widths = sorted(json.loads((p.parent / "run_config.json").read_text())["strategy"]["beam_width"] for p in found)
    assert widths == [1, 2]


def test_a_rebuilt_toy_policy_makes_other_results(tmp_path, monkeypatch):
    """The policy's weights are part of a run's identity: results made with the toy policy of
    an older task or recipe are not resumed as if they were the current one's, and working
    the identity out builds nothing."""
    from omegaconf import OmegaConf

    import itc.toy.build
    from itc.cache import checkpoint_fingerprint
    from itc.runner import _check_resume, _identity

    def no_building(*args, **kwargs):
        raise AssertionError("the identity built a model")

    monkeypatch.setenv("ITC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(itc.toy.build, "build_checked", no_building)
    cfg = OmegaConf.create({"policy": {"name": "toy", "model": "toy"}, "dataset": {"name": "toy"},
                            "strategy": {"name": "majority"}, "seed": 0})
    entry = itc.toy.build.policy_entry()
    assert _identity(cfg)["policy_weights"] == checkpoint_fingerprint(str(entry))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run_config.json").write_text(json.dumps({**_identity(cfg), "policy_weights": "an older world"}))
    (run_dir / "results.jsonl").write_text('{"problem_id": "a"}\n')
    with pytest.raises(ConfigMismatchError, match="policy_weights"):
        _check_resume(run_dir, cfg)
    (run_dir / "run_config.json").write_text(json.dumps(_identity(cfg)))
    _check_resume(run_dir, cfg)  # the same weights resume
