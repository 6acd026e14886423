"""The run loop behind ``itc-run``: problems in batches through a strategy, results to disk."""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from itc.cache import checkpoint_fingerprint
from itc.config_schema import validate_run_config
from itc.data import load_problems
from itc.errors import BackendError, InputError
from itc.grading import EXACT_STRING_FALLBACK, GradingBudget
from itc.policy import Policy, build_policy
from itc.results import (
    CONFIG_FILE,
    METRICS_FILE,
    PLAN_FILE,
    RESULTS_FILE,
    ResultsStore,
    atomic_writer,
    flatten,
    read_json,
    summarize,
    write_json_atomic,
)
from itc.shard import parse_shard, select_shard
from itc.types import Problem, StrategyResult
from strategies import build_strategy
from strategies.accounting import score_usage
from strategies.base import require_prm
from strategies.selection import select_all

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# The parts of the config that decide what a result means; a resumed run must match them.
IDENTITY_KEYS = ("policy", "dataset", "strategy", "prm", "seed")
# How a model is served (engine sizes, KV block size, batch sizes) does not change what a
# run means, so a resume may change it.
SERVING_KEYS = ("vllm", "hf", "openai")
HYDRA_RECORD = ".hydra"  # where the run's full config and overrides are recorded


class ConfigMismatchError(InputError):
    """The run folder holds results of a different configuration."""


def _identity(cfg: DictConfig) -> dict[str, Any]:
    """What the run's results mean: its config's identity keys and the PRM's weights. Nothing
    is trained here: a toy PRM not trained yet is named as such (``prm.toy``), and the
    identity is worked out again once the PRM is loaded (:func:`run_experiment`)."""
    c = OmegaConf.to_container(cfg, resolve=True)
    ident = _without_serving({k: c.get(k) for k in IDENTITY_KEYS})
    # a rebuilt or retrained policy under the same name (the toy world after a change to its
    # task or recipe) makes other results: its weights are part of what a result means
    model = (c.get("policy") or {}).get("model")
    if model:
        ident["policy_weights"] = checkpoint_fingerprint(_policy_model_path(model))
    if c.get("shard") is not None:  # a shard's results are a part of the run's
        ident["shard"] = str(parse_shard(c["shard"]))
    if c.get("prm") is not None:  # a retrained PRM under the same name makes other results
        from prm.toy import resolve_prm_model

        ident["prm_weights"] = checkpoint_fingerprint(resolve_prm_model(c["prm"]["model"], train=False))
    return ident


def _policy_model_path(model: str) -> str:
    """Where the policy's weights are; for ``toy``, the cache entry of the current build
    recipe, built or not (nothing is built here)."""
    if model == "toy":
        from itc.toy.build import policy_entry

        return str(policy_entry())
    if model == "toy-ttt":
        from itc.toy import long_chain

        return str(long_chain.policy_entry("ttt", long_chain.TOY_TTT))
    return model


def _without_serving(ident: dict[str, Any]) -> dict[str, Any]:
    """``ident`` without the policy's and PRM's serving settings (also for identities
    recorded before they were left out)."""
    out = dict(ident)
    for group in ("policy", "prm"):
        if isinstance(out.get(group), dict):
            out[group] = {k: v for k, v in out[group].items() if k not in SERVING_KEYS}
    return out


def _check_resume(run_dir: Path, cfg: DictConfig, ident: dict[str, Any] | None = None) -> None:
    """Check that a folder holding results holds them for this configuration. A folder with
    no results takes any configuration: the identity is recorded with the first result
    (:func:`_record_run`), so a run that failed before writing one never blocks its fix."""
    path = run_dir / CONFIG_FILE
    results = run_dir / RESULTS_FILE
    if not path.exists() or not results.exists() or not results.read_bytes().strip():
        return
    old = flatten(_without_serving(read_json(path)))
    new = flatten(ident if ident is not None else _identity(cfg))
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if diff:
        raise ConfigMismatchError(
            f"{run_dir} holds results of a different configuration (differs in: "
            f"{', '.join(diff)}); choose another hydra.run.dir or delete that folder"
        )


def _record_run(run_dir: Path, cfg: DictConfig, ident: dict[str, Any]) -> None:
    """The run's own record, written just before its first result: its identity
    (``run_config.json``, read by resumes and by itc-curves) and, under ``.hydra/``, the
    whole config and the command-line overrides. Hydra itself writes nothing into the
    folder (``hydra.output_subdir: null``), so a refused run cannot overwrite them."""
    write_json_atomic(run_dir / CONFIG_FILE, ident)
    with atomic_writer(run_dir / HYDRA_RECORD / "config.yaml") as f:
        f.write(OmegaConf.to_yaml(cfg))
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        with atomic_writer(run_dir / HYDRA_RECORD / "overrides.yaml") as f:
            f.write(OmegaConf.to_yaml(HydraConfig.get().overrides.task))


def _record_plan(run_dir: Path, problems: list[Problem], dataset: list[Problem], shard: Any) -> None:
    """What the run sets out to do (``plan.json``): its number of problems, the job's
    overrides (so that ``itc-sweep-status`` can tell a partial run's progress from its files)
    and, for a shard, the dataset's size and each problem's place in it (``itc-curves``
    merges the shards in the dataset's order)."""
    from hydra.core.hydra_config import HydraConfig

    plan: dict[str, Any] = {
        "problems": len(problems),
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None,
    }
    if shard is not None:
        place = {p.id: i for i, p in enumerate(dataset)}
        plan.update(shard=str(shard), dataset_problems=len(dataset), order={p.id: place[p.id] for p in problems})
    write_json_atomic(run_dir / PLAN_FILE, plan)


def _record_job(run_dir: Path) -> None:
    """Add this job's command-line overrides to the folder's list of finished jobs
    (``.hydra/jobs.yaml``): several jobs of a sweep can share a folder (``greedy`` ignores
    ``n``), and ``itc-curves`` checks a sweep's jobs against these lists."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    path = run_dir / HYDRA_RECORD / "jobs.yaml"
    jobs = OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else []
    task = list(HydraConfig.get().overrides.task)
    if task not in jobs:
        with atomic_writer(path) as f:
            f.write(OmegaConf.to_yaml([*jobs, task]))


def to_record(
    problem: Problem,
    result: StrategyResult,
    wall_seconds: float,
    policy_parameters: int = 0,
    prm_parameters: int = 0,
    scoring: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """The results.jsonl line for one problem; grades the candidates, the choice, and the
    choice under every selection rule (``correct_by_selection``; the PRM rules when the
    candidates are scored).

    FLOPs are estimated as 2 x parameters x tokens computed (prompt tokens the engine did not
    read from its prefix cache plus completion tokens for the policy, PRM input tokens
    computed for the PRM). ``scoring``: the PRM tokens (sent, computed) that itc-run spent
    scoring a non-PRM strategy's candidates for the record, kept apart from its compute."""
    candidates = []
    budget = GradingBudget()  # grading one problem's candidates is bounded in time
    for cand in result.candidates:
        cand.correct = budget.equivalent(cand.answer, problem.answer)
        candidates.append(cand.to_dict())
    chosen_correct = result.chosen_answer is not None and budget.equivalent(
        result.chosen_answer, problem.answer
    )
    by_rule = select_all(result.candidates, result.among)
    exact_only = budget.exhausted or any(c.meta.get(EXACT_STRING_FALLBACK) for c in result.candidates)
    return {
        "problem_id": problem.id,
        "level": problem.level,
        "subject": problem.subject,
        "problem": problem.problem,
        "gold": problem.answer,
        "chosen_index": result.chosen_index,
        "chosen_answer": result.chosen_answer,
        "correct": chosen_correct,
        "selection": result.selection,
        "correct_by_selection": {
            rule: k is not None and bool(result.candidates[k].correct) for rule, k in by_rule.items()
        },
        "among": result.among,
        "prompt_tokens": result.prompt_tokens,
        "prompt_tokens_computed": result.prompt_tokens_computed,
        "completion_tokens": result.completion_tokens,
        "prm_tokens": result.prm_tokens,
        "prm_tokens_computed": result.prm_tokens_computed,
        "scoring_prm_tokens": scoring[0],
        "scoring_prm_tokens_computed": scoring[1],
        "policy_flops": 2 * policy_parameters * (result.prompt_tokens_computed + result.completion_tokens),
        "prm_flops": 2 * prm_parameters * result.prm_tokens_computed,
        "wall_seconds": round(wall_seconds, 4),
        "candidates": candidates,
        "meta": result.meta,
        EXACT_STRING_FALLBACK: exact_only,
    }


def _score_unscored(prm: Any, problems: list[Problem], results: list[StrategyResult]) -> list[tuple[int, int]]:
    """PRM scores for candidates the strategy left unscored, in one batched call; the PRM
    tokens (sent, computed) this spent on each problem."""
    todo = [
        (k, [c for c in r.candidates if c.step_scores is None]) for k, r in enumerate(results)
    ]
    todo = [(k, cands) for k, cands in todo if cands]
    spent = [(0, 0)] * len(results)
    if todo:
        from prm.scoring.base import mark_too_long

        scores, sent, computed = score_usage(
            prm, [problems[k].problem for k, _ in todo], [[c.steps for c in cands] for _, cands in todo]
        )
        for (k, cands), per_problem, s, c in zip(todo, scores, sent, computed):
            spent[k] = (s, c)
            for cand, step_scores in zip(cands, per_problem):
                mark_too_long(step_scores, cand.meta)
                cand.step_scores = list(step_scores)
                cand.score = prm.aggregate(step_scores)
    return spent


def _check_prompts(policy: Policy, problems: list[Problem]) -> set[str]:
    """Raise PromptTooLongError for a prompt that cannot fit the policy's context at all;
    return the ids of problems whose prompt leaves less room than ``max_tokens`` (their
    solutions may be cut short by the context), with a warning naming each."""
    truncated = set()
    max_tokens = policy.sampling.max_tokens
    for p in problems:
        used = policy.check_prompt(policy.format_prompt(p.problem), what=f"problem {p.id!r}")
        if used + max_tokens > policy.max_model_len:
            truncated.add(p.id)
            log.warning(
                "problem %r: its prompt is %d tokens, leaving %d of policy.sampling.max_tokens=%d "
                "in the context of %d (policy.max_model_len); its solutions may be cut short",
                p.id, used, policy.max_model_len - used, max_tokens, policy.max_model_len,
            )
    return truncated


def _run_batch(
    strategy: Any, batch: list[Problem], policy: Policy, prm: Any
) -> tuple[list[tuple[Problem, StrategyResult]], list[tuple[Problem, Exception]]]:
    """The strategy on a batch; if the batch fails, on each of its problems alone, so that
    one problem's failure loses no other problem's result."""
    try:
        return list(zip(batch, strategy.run(batch, policy, prm))), []
    except BackendError:  # an engine that failed fails every problem alike
        raise
    except Exception as e:  # noqa: BLE001 - retried one by one below
        if len(batch) == 1:
            return [], [(batch[0], e)]
        log.warning("a batch of %d problems failed (%s: %s); running them one by one", len(batch), type(e).__name__, e)
    done, failed = [], []
    for problem in batch:
        try:
            done.append((problem, strategy.run([problem], policy, prm)[0]))
        except Exception as e:  # noqa: BLE001 - reported, and re-raised after the rest
            failed.append((problem, e))
    return done, failed


def _concurrency(cfg: DictConfig, policy: Policy | None, prm: Any) -> int:
    """How many batches run at once (``concurrency``): more than one needs backends that
    take calls from several threads (servers: ``backend=openai``); checked on the models
    given, else on the config (before any engine starts)."""
    concurrency = int(cfg.get("concurrency", 1))
    if concurrency > 1:
        def threaded(model: Any, group: str) -> bool:
            if model is not None:
                return getattr(model, "concurrent_calls", False)
            return cfg.get(group) is None or cfg[group].get("backend") == "openai"

        if not (threaded(policy, "policy") and threaded(prm, "prm")):
            raise InputError(
                f"concurrency={concurrency} runs several batches at once, which needs servers: "
                f"set policy.backend=openai (and prm.backend=openai with a prm); an in-process "
                f"engine runs one batch at a time (concurrency=1)"
            )
    return concurrency


def in_order(fn: Callable[[T], R], items: Sequence[T], concurrency: int) -> Iterator[R]:
    """``fn`` over ``items``, up to ``concurrency`` at once in threads, the results yielded in
    the items' order (so what is written does not depend on which call ends first). A
    failure is raised when its turn comes, after the calls in flight have ended."""
    if concurrency <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(concurrency, thread_name_prefix="itc-batch") as pool:
        pending: deque[Future[R]] = deque()
        rest = iter(items)
        try:
            for item in itertools.islice(rest, concurrency):
                pending.append(pool.submit(fn, item))
            while pending:
                result = pending.popleft().result()
                for item in itertools.islice(rest, 1):
                    pending.append(pool.submit(fn, item))
                yield result
        finally:
            for f in pending:
                f.cancel()


def run_experiment(
    cfg: DictConfig, run_dir: str | Path, policy: Policy | None = None, prm: Any = None
) -> dict[str, Any]:
    """Run (or resume) one configuration in ``run_dir``; returns the metrics written.

    With a ``prm`` group selected, every candidate's steps are scored (``step_scores`` and
    the aggregated ``score``) unless the strategy already did so, or ``score_candidates`` is
    false.
    """
    validate_run_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_problems(cfg.dataset)
    shard = parse_shard(cfg.get("shard"))
    problems = select_shard(dataset, shard)
    strategy = build_strategy(cfg.strategy)
    if strategy.needs_prm and prm is None and cfg.get("prm") is None:
        require_prm(None, strategy.name)  # before any engine starts
    ident = _identity(cfg)
    _check_resume(run_dir, cfg, ident)
    _record_plan(run_dir, problems, dataset, shard)
    concurrency = _concurrency(cfg, policy, prm)
    store = ResultsStore(run_dir)
    todo = [p for p in problems if p.id not in store.done_ids]
    if store.records:
        log.info("Resuming in %s: %d done, %d to go", run_dir, len(store.records), len(todo))
    if todo:
        policy = policy or build_policy(cfg.policy, seed=cfg.seed)
        if prm is None and cfg.get("prm") is not None:
            from prm.scoring import build_prm

            prm = build_prm(cfg.prm, seed=cfg.seed)  # a toy PRM is trained here if it must be
        ident = _identity(cfg)  # with the weights now built and loaded
        truncated = _check_prompts(policy, todo)  # fails before any work if one cannot fit
        batch_size = int(cfg.get("batch_size", 64))
        failed: list[tuple[Problem, Exception]] = []
        recorded = bool(store.records) and (run_dir / CONFIG_FILE).exists()
        concurrency = _concurrency(cfg, policy, prm)
        score = prm is not None and cfg.get("score_candidates", True)

        def work(batch: list[Problem]) -> tuple[list[tuple[Problem, StrategyResult]], list, float, list]:
            t0 = time.perf_counter()
            done, errors = _run_batch(strategy, batch, policy, prm)
            per_problem = (time.perf_counter() - t0) / len(batch)
            scoring = [(0, 0)] * len(done)
            if score and done:  # for the record only: not counted as the strategy's compute
                scoring = _score_unscored(prm, [p for p, _ in done], [r for _, r in done])
            return done, errors, per_problem, scoring

        batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        with tqdm(total=len(problems), initial=len(problems) - len(todo), desc=f"{strategy.name} n={strategy.n}", unit="problem") as bar:
            for done, errors, per_problem, scoring in in_order(work, batches, concurrency):
                failed += errors
                sizes = (policy.num_parameters, prm.num_parameters if prm is not None else 0)
                for (problem, result), spent in zip(done, scoring):
                    record = to_record(problem, result, per_problem, *sizes, scoring=spent)
                    record["truncated_by_context"] = problem.id in truncated
                    if not recorded:
                        _record_run(run_dir, cfg, ident)
                        recorded = True
                    store.append(record)
                bar.update(len(done) + len(errors))
        if failed:
            for problem, e in failed:
                log.error("problem %r failed (%s: %s)", problem.id, type(e).__name__, e)
            log.error(
                "%d problem(s) failed; the others are written, and a rerun of the same command "
                "retries only the failed ones", len(failed),
            )
            raise failed[0][1]
    wanted = {p.id for p in problems}
    records = [r for r in store.records if r["problem_id"] in wanted]
    metrics = summarize(
        records,
        strategy=strategy.name,
        n=strategy.n,
        policy=cfg.policy.name,
        dataset=cfg.dataset.name,
        prm=cfg.prm.name if cfg.get("prm") is not None else None,
        seed=cfg.seed,
    )
    if shard is not None:
        metrics.update(shard=str(shard), dataset_problems=len(dataset))
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    _record_job(run_dir)
    return metrics
