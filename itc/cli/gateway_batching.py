"""The gateway's batching: concurrent requests gathered into strategy batches, solved on one
worker thread, with progress reports and cancellation at the next step.

Requests (:class:`Job`) wait in a queue. The worker takes the first and lets others join
while they keep coming (until none has arrived for the batch window, or the first has
waited ``max_wait_s``, up to ``max_concurrent``), groups them by strategy settings and
``max_tokens``, and runs each group as one batch through ``strategy.run``, the same call
``itc-run`` makes for a batch of problems. Each request's samples are seeded by its own
problem id (:func:`request_problem_id`), so its answer does not depend on its batch.

Every policy and PRM call of a batch goes through :class:`GatewayMeter`, which reports each
request's progress after the call and leaves out the requests whose client has gone: their
prompts are not sent to the engine (they get empty completions and zero scores, which end
any search), so their work stops at the next step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import OmegaConf

from itc.errors import BackendError, InputError
from itc.policy import Policy
from itc.types import Completion, Problem, StrategyResult
from strategies import build_strategy
from strategies.accounting import Meter

log = logging.getLogger("itc.gateway")

RECENT = 1000  # requests whose outcome /itc/stats keeps


def request_problem_id(problem: str, seed: int | None = None) -> str:
    """The problem id a request is solved under: a hash of its problem text and its ``seed``
    (none: empty). Sampling seeds derive from it (``itc.policy.base.request_seed``), so the
    same prompt and seed give the same answer in any batch, and ``itc-run`` on a problem with
    this id gives the same answer too."""
    key = f"{'' if seed is None else seed}\0{problem}"
    return "req-" + hashlib.sha256(key.encode()).hexdigest()[:16]


class QueueFull(Exception):
    """More requests than ``max_concurrent`` + ``max_queue`` are in the gateway."""


@dataclass
class Job:
    """One problem of one request, from its arrival to its result."""

    request_id: str
    problem: Problem
    settings: dict[str, Any]  # the strategy config (with ``_target_``), n included
    max_tokens: int | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    events: asyncio.Queue | None = None  # progress reports, for a streaming request
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)
    steps: int = 0  # policy and PRM calls it has taken part in

    @property
    def key(self) -> str:
        """Requests with the same key can share a batch."""
        return json.dumps([self.settings, self.max_tokens], sort_keys=True)

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass

    def resolve(self, result: Any) -> None:
        self._call(lambda: self.future.done() or self.future.set_result(result))

    def fail(self, error: BaseException) -> None:
        self._call(lambda: self.future.done() or self.future.set_exception(error))

    def cancel(self) -> None:
        self._call(self.future.cancel)

    def report(self, event: dict[str, Any]) -> None:
        if self.events is not None:
            self._call(self.events.put_nowait, event)


class GatewayMeter(Meter):
    """A :class:`Meter` that reports each request's progress after every call and sends no
    work for requests that were cancelled."""

    def __init__(self, jobs: Sequence[Job], stats: Stats) -> None:
        super().__init__(len(jobs))
        self.jobs = list(jobs)
        self.stats = stats
        self.policy_calls = 0
        self.prm_calls = 0

    def _live(self, owners: Sequence[int]) -> list[bool]:
        return [not self.jobs[o].cancelled.is_set() for o in owners]

    def _progress(self, owners: Sequence[int]) -> None:
        for o in dict.fromkeys(owners):
            job, usage = self.jobs[o], self.usage[o]
            job.steps += 1
            job.report({
                "step": job.steps,
                "completion_tokens": usage.completion_tokens,
                "prm_tokens": usage.prm_tokens,
            })

    def generate(
        self, policy: Policy, prompts: Sequence[str], owners: Sequence[int], n: int = 1, **kwargs: Any
    ) -> list[list[Completion]]:
        owners = list(owners)
        live = self._live(owners)
        if all(live):
            outputs = super().generate(policy, prompts, owners, n, **kwargs)
            self.policy_calls += bool(prompts)
        else:
            keep = [i for i, ok in enumerate(live) if ok]
            kw = dict(kwargs)
            if kw.get("request_keys") is not None:
                kw["request_keys"] = [kw["request_keys"][i] for i in keep]
            if kw.get("stop_when") is not None:  # it is told prompt indices of this call
                rule = kw["stop_when"]
                kw["stop_when"] = lambda i, conf, seen: rule(keep[i], conf, seen)
            sent = super().generate(policy, [prompts[i] for i in keep], [owners[i] for i in keep], n, **kw)
            self.policy_calls += bool(keep)
            empty = [Completion("", 0, True, "stopped", 0, [] if kw.get("logprobs") else None)] * n
            done = iter(sent)
            outputs = [next(done) if ok else list(empty) for ok in live]
        self._progress([o for o, ok in zip(owners, live) if ok])
        return outputs

    def score(
        self,
        prm: Any,
        problems: Sequence[str],
        candidates: Sequence[Sequence[Sequence[str]]],
        owners: Sequence[int],
        known: Sequence[Sequence[int]] | None = None,
    ) -> list[list[list[float]]]:
        owners = list(owners)
        live = self._live(owners)
        keep = [i for i, ok in enumerate(live) if ok]
        scored = super().score(
            prm,
            [problems[i] for i in keep],
            [candidates[i] for i in keep],
            [owners[i] for i in keep],
            None if known is None else [known[i] for i in keep],
        )
        self.prm_calls += bool(keep)
        done = iter(scored)
        out = []
        for i, ok in enumerate(live):
            if ok:
                out.append(next(done))
            else:  # zero for every new step: a search ends it, a selection never prefers it
                first = [0] * len(candidates[i]) if known is None else known[i]
                out.append([[0.0] * (len(steps) - k) for steps, k in zip(candidates[i], first)])
        self._progress([owners[i] for i in keep])
        return out


@dataclass
class Stats:
    """Counters /itc/stats reports, and the outcome of recent requests."""

    requests: int = 0
    batches: int = 0
    policy_calls: int = 0
    prm_calls: int = 0
    largest_batch: int = 0
    batch_sizes: list = field(default_factory=list)  # of the last RECENT batches
    disconnected: int = 0  # requests whose client left before the answer
    cancelled: int = 0  # problems whose work was dropped for it
    rejected: int = 0  # 429
    failed: int = 0  # 502
    recent: OrderedDict = field(default_factory=OrderedDict)

    def record(self, request_id: str, **outcome: Any) -> None:
        self.recent.setdefault(request_id, {}).update(outcome)
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "recent"}
        return {**d, "recent": dict(self.recent)}


@contextmanager
def max_tokens_of(policy: Policy, max_tokens: int | None) -> Iterator[None]:
    """``policy.sampling.max_tokens`` set to ``max_tokens`` (None: unchanged) for one batch."""
    if max_tokens is None:
        yield
        return
    before = policy.sampling
    policy.sampling = replace(before, max_tokens=max_tokens)
    try:
        yield
    finally:
        policy.sampling = before


class Batcher:
    """The queue of jobs and the one worker thread that solves them in batches."""

    def __init__(
        self,
        policy: Policy,
        prm: Any,
        max_concurrent: int,
        max_queue: int,
        window_s: float,
        max_wait_s: float,
        log_prompts: bool = False,
    ) -> None:
        self.policy, self.prm = policy, prm
        self.max_concurrent, self.max_queue = max_concurrent, max_queue
        self.window_s, self.max_wait_s = window_s, max_wait_s
        self.log_prompts = log_prompts
        self.stats = Stats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._in = 0  # jobs submitted and not yet finished
        self._thread = threading.Thread(target=self._work, name="itc-gateway-batcher", daemon=True)
        self._thread.start()

    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue one request's jobs, or raise :class:`QueueFull` (the answer is 429)."""
        with self._lock:
            room = self.max_concurrent + self.max_queue - self._in
            if len(jobs) > room:
                self.stats.rejected += 1
                raise QueueFull(
                    f"the gateway is full: {self._in} problems in progress or waiting "
                    f"(gateway.max_concurrent={self.max_concurrent} + gateway.max_queue="
                    f"{self.max_queue}); retry later"
                )
            self._in += len(jobs)
            self.stats.requests += 1
        for job in jobs:
            extra = f" problem={job.problem.problem!r}" if self.log_prompts else ""
            log.info("request %s: queued (%s, n=%s)%s", job.request_id, job.settings.get("name"),
                     job.settings.get("n"), extra)
            self._queue.put(job)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _done(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            self._in -= len(jobs)

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """``first`` and the jobs that join it: until none has arrived for the window, the
        first has waited ``max_wait_s``, or the batch is full. Jobs that queued while the
        last batch ran are taken at once."""
        jobs, stop = [first], False
        last = max(first.arrived, time.monotonic() - self.window_s)
        while len(jobs) < self.max_concurrent:
            now = time.monotonic()
            wait = min(last + self.window_s, first.arrived + self.max_wait_s) - now
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
            last = job.arrived
        return jobs, stop

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            groups: dict[str, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for group in groups.values():
                try:
                    self._run_group(group)
                except Exception as e:  # the worker must outlive any batch
                    log.exception("batch failed")
                    for job in group:
                        job.fail(e)
                finally:
                    self._done(group)
            if stop:
                return

    def _drop_cancelled(self, jobs: list[Job]) -> list[Job]:
        live = []
        for job in jobs:
            if job.cancelled.is_set():
                self._cancelled(job, "before it started")
            else:
                live.append(job)
        return live

    def _cancelled(self, job: Job, when: str) -> None:
        self.stats.cancelled += 1
        self.stats.record(job.request_id, status="cancelled", steps=job.steps)
        log.info("request %s: cancelled by its client %s (step %d)", job.request_id, when, job.steps)
        job.cancel()

    def _run_group(self, jobs: list[Job]) -> None:
        jobs = self._drop_cancelled(jobs)
        ok = []
        for job in jobs:  # a prompt that cannot fit the context fails alone, before any work
            try:
                self.policy.check_prompt(self.policy.format_prompt(job.problem.problem), what=f"request {job.request_id}")
                ok.append(job)
            except InputError as e:
                job.fail(e)
        if not ok:
            return
        strategy = build_strategy(OmegaConf.create(ok[0].settings))
        self._run_batch(strategy, ok, ok[0].max_tokens)

    def _run_batch(self, strategy: Any, jobs: list[Job], max_tokens: int | None) -> None:
        """One strategy batch; if it fails other than in the backend, each job alone (as
        ``itc-run`` retries a failed batch), so one request's failure fails no other."""
        t0 = time.perf_counter()
        meter = GatewayMeter(jobs, self.stats)
        try:
            with max_tokens_of(self.policy, max_tokens):
                results = strategy.run([j.problem for j in jobs], self.policy, self.prm, meter=meter)
        except BackendError as e:
            self._count(meter, len(jobs))
            self.stats.failed += len(jobs)
            log.error("batch of %d requests: backend failure: %s", len(jobs), e)
            for job in jobs:
                self.stats.record(job.request_id, status="failed")
                job.fail(e)
            return
        except Exception as e:  # noqa: BLE001 - retried one by one, then reported per request
            self._count(meter, len(jobs))
            if len(jobs) == 1:
                log.error("request %s failed (%s: %s)", jobs[0].request_id, type(e).__name__, e)
                self.stats.record(jobs[0].request_id, status="failed")
                jobs[0].fail(e)
                return
            log.warning("a batch of %d requests failed (%s: %s); running them one by one", len(jobs), type(e).__name__, e)
            for job in jobs:
                self._run_batch(strategy, [job], max_tokens)
            return
        self._count(meter, len(jobs))
        seconds = time.perf_counter() - t0
        log.info(
            "batch %d: %d requests (%s n=%d): %d policy calls, %d PRM calls, %.2f s",
            self.stats.batches, len(jobs), strategy.name, strategy.n, meter.policy_calls, meter.prm_calls, seconds,
        )
        for job, result in zip(jobs, results):
            if job.cancelled.is_set():
                self._cancelled(job, "while it ran")
                continue
            self.stats.record(
                job.request_id, status="done", steps=job.steps, batch=self.stats.batches,
                batch_size=len(jobs), completion_tokens=result.completion_tokens,
            )
            log.info("request %s: done, %d completion tokens, %d PRM tokens", job.request_id,
                     result.completion_tokens, result.prm_tokens)
            job.resolve(result)

    def _count(self, meter: GatewayMeter, size: int) -> None:
        self.stats.batches += 1
        self.stats.policy_calls += meter.policy_calls
        self.stats.prm_calls += meter.prm_calls
        self.stats.largest_batch = max(self.stats.largest_batch, size)
        self.stats.batch_sizes = [*self.stats.batch_sizes[-RECENT + 1 :], size]


__all__ = ["Batcher", "GatewayMeter", "Job", "QueueFull", "Stats", "StrategyResult", "request_problem_id"]
