"""Talking to models behind OpenAI-compatible servers (``vllm serve``): one pool of endpoints.

The policy's ``openai`` backend (``/v1/completions``) and the PRM's (``/pooling``) share this
pool. Each endpoint has a concurrency limit; a request goes to the least-busy endpoint that
is up, and is retried (exponential backoff with jitter) on connection errors, timeouts and
5xx answers, on whichever endpoint is then least busy. An endpoint that failed is out of
rotation for a cool-down that doubles with each failure in a row, then tried again. When a
request has used all its attempts, :class:`~itc.errors.BackendError` names every URL and
the last thing each one said. A malformed answer (:class:`MalformedResponse`) or a 4xx is
never retried: it names the endpoint at once.

Requests run on one asyncio loop in a background thread, so synchronous callers on any
thread (the runner's concurrent batches) share the pool: :meth:`EndpointPool.run`.
Design and deployment notes: docs/serving.md.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from itc.errors import BackendError, InputError

log = logging.getLogger(__name__)
# httpx logs every request at INFO: thousands of lines per search step in a run's log
logging.getLogger("httpx").setLevel(logging.WARNING)
T = TypeVar("T")

MAX_COOLDOWN_S = 30.0  # the longest an endpoint stays out of rotation before it is tried again


class MalformedResponse(Exception):
    """An answer that is not what the API promises (bad JSON, a missing field, a wrong
    number of choices): a bug or a wrong server, never retried nor accepted."""


@dataclass
class ServingConfig:
    """``policy.openai`` / ``prm.openai``: where the servers are and how to call them."""

    base_urls: list[str] = field(default_factory=list)
    model: str | None = None  # the served model name; null: the config's ``model``
    api_key: str = "EMPTY"
    timeout_s: float = 600.0  # per request
    max_retries: int = 5  # attempts after the first, over all endpoints
    backoff_s: float = 0.5  # first retry's wait; doubles each time, with jitter
    max_concurrency: int = 1024  # requests in flight per endpoint


def root_url(url: str) -> str:
    """``http://host:port`` of a base URL given with or without ``/v1``."""
    url = url.strip().rstrip("/")
    url = url.removesuffix("/v1")
    if not url.startswith(("http://", "https://")):
        raise InputError(f"server URL {url!r} must start with http:// or https://")
    return url


class Endpoint:
    """One server: its clients, its in-flight count and its health."""

    def __init__(self, url: str, cfg: ServingConfig) -> None:
        self.url = root_url(url)
        self.cfg = cfg
        self.in_flight = 0
        self.failures = 0  # failures in a row
        self.down_until = 0.0
        self.last_error: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._openai: Any = None
        self._semaphore: asyncio.Semaphore | None = None

    # Clients and semaphore are made on the pool's loop, on first use.
    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            limit = self.cfg.max_concurrency
            self._http = httpx.AsyncClient(
                base_url=self.url,
                timeout=httpx.Timeout(self.cfg.timeout_s),
                limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
                headers={"Authorization": f"Bearer {self.cfg.api_key}"},
            )
        return self._http

    @property
    def openai(self) -> Any:
        """An ``openai.AsyncOpenAI`` client on this server (its own retries off: the pool's
        retries choose the endpoint again)."""
        if self._openai is None:
            from openai import AsyncOpenAI

            self._openai = AsyncOpenAI(
                base_url=self.url + "/v1",
                api_key=self.cfg.api_key,
                timeout=self.cfg.timeout_s,
                max_retries=0,
                http_client=self.http,
            )
        return self._openai

    @property
    def semaphore(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.cfg.max_concurrency)
        return self._semaphore

    def up(self, now: float) -> bool:
        return now >= self.down_until

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        cooldown = min(MAX_COOLDOWN_S, self.cfg.backoff_s * 2 ** (self.failures - 1))
        self.down_until = time.monotonic() + cooldown

    def succeeded(self) -> None:
        self.failures = 0
        self.down_until = 0.0


def _malformed(e: BaseException) -> bool:
    """An answer that does not parse or does not fit the API's schema."""
    import json

    import openai

    return isinstance(e, (MalformedResponse, json.JSONDecodeError, openai.APIResponseValidationError))


def _retryable(e: BaseException) -> str | None:
    """What went wrong, when it is worth another try (else None)."""
    import openai

    if isinstance(e, (httpx.TimeoutException, openai.APITimeoutError, asyncio.TimeoutError)):
        return f"timed out ({type(e).__name__})"
    if isinstance(e, (httpx.TransportError, openai.APIConnectionError)):
        return f"connection failed ({type(e).__name__}: {e})"
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(status, int) and status >= 500:
        return f"HTTP {status}"
    return None


def _refusal(e: BaseException) -> str:
    """A non-retryable failure in a few words (a 4xx with the server's message)."""
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        try:
            body = response.text[:300]
        except Exception:  # noqa: BLE001 - a streamed or closed body
            body = ""
        return f"HTTP {status}: {body}"
    return f"{type(e).__name__}: {e}"


class EndpointPool:
    """Endpoints behind one name (``policy 'toy'``), called from any thread."""

    def __init__(self, what: str, cfg: ServingConfig) -> None:
        if not cfg.base_urls:
            raise InputError(f"{what}: openai.base_urls is empty: give one or more server URLs")
        self.what = what
        self.cfg = cfg
        self.endpoints = [Endpoint(u, cfg) for u in cfg.base_urls]
        if len({e.url for e in self.endpoints}) != len(self.endpoints):
            raise InputError(f"{what}: openai.base_urls lists a server twice: {cfg.base_urls}")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="itc-serving", daemon=True)
        self._thread.start()
        self._turn = 0

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self.endpoints]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the pool's loop and wait for its result (from any thread)."""
        if self._loop.is_closed():
            raise BackendError(f"{self.what}: the server client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def gather(self, calls: Sequence[Callable[[Endpoint], Awaitable[T]]]) -> list[T]:
        """Each call through :meth:`call`, all at once; their results in order."""

        async def all_of() -> list[T]:
            tasks = [asyncio.ensure_future(self.call(c)) for c in calls]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

        return self.run(all_of())

    def _pick(self) -> Endpoint | None:
        """The least-busy endpoint that is up (ties: in turn), or None when all are down."""
        now = time.monotonic()
        live = [e for e in self.endpoints if e.up(now)]
        if not live:
            return None
        self._turn += 1
        k = len(self.endpoints)
        return min(live, key=lambda e: (e.in_flight, (self.endpoints.index(e) - self._turn) % k))

    async def call(self, fn: Callable[[Endpoint], Awaitable[T]]) -> T:
        """``fn(endpoint)`` on the least-busy live endpoint, retried as the module says."""
        attempts = self.cfg.max_retries + 1
        for attempt in range(attempts):
            endpoint = self._pick()
            while endpoint is None:  # all out of rotation: wait for the first to come back
                wake = min(e.down_until for e in self.endpoints)
                await asyncio.sleep(max(0.0, wake - time.monotonic()))
                endpoint = self._pick()
            endpoint.in_flight += 1
            try:
                async with endpoint.semaphore:
                    result = await asyncio.wait_for(fn(endpoint), self.cfg.timeout_s)
            except Exception as e:  # sorted: malformed, worth a retry, or refused
                if _malformed(e):
                    raise BackendError(f"{self.what}: malformed response from {endpoint.url}: {e}") from e
                why = _retryable(e)
                if why is None:
                    raise BackendError(f"{self.what}: {endpoint.url} refused the request ({_refusal(e)})") from e
                endpoint.failed(why)
                log.warning("%s: %s %s (attempt %d of %d)", self.what, endpoint.url, why, attempt + 1, attempts)
                if attempt + 1 < attempts:
                    delay = self.cfg.backoff_s * 2**attempt * random.uniform(0.5, 1.5)
                    await asyncio.sleep(delay)
                continue
            finally:
                endpoint.in_flight -= 1
            endpoint.succeeded()
            return result
        raise BackendError(self.failure_report(attempts))

    def failure_report(self, attempts: int) -> str:
        said = "; ".join(f"{e.url}: {e.last_error or 'no error (not reached)'}" for e in self.endpoints)
        return f"{self.what}: no server answered after {attempts} attempts ({said})"

    def check_model(self, expected: str) -> int | None:
        """Check that every reachable server serves ``expected`` (``GET /v1/models``), and
        return the smallest ``max_model_len`` they report. Unreachable servers are taken out
        of rotation (tried again later); none reachable is a :class:`BackendError`."""

        async def models(e: Endpoint) -> tuple[Endpoint, Any]:
            try:
                r = await e.http.get("/v1/models")
                r.raise_for_status()
                return e, r.json()
            except Exception as exc:  # noqa: BLE001 - reported below
                return e, exc

        async def all_models() -> list[tuple[Endpoint, Any]]:
            return list(await asyncio.gather(*(models(e) for e in self.endpoints)))

        lens = []
        reached = 0
        for e, got in self.run(all_models()):
            if isinstance(got, BaseException):
                e.failed(_retryable(got) or _refusal(got))
                log.warning("%s: %s is not answering (%s); it is tried again later", self.what, e.url, e.last_error)
                continue
            reached += 1
            try:
                served = [(m["id"], m.get("max_model_len")) for m in got["data"]]
            except (KeyError, TypeError) as exc:
                raise BackendError(f"{self.what}: malformed /v1/models response from {e.url}: {got!r:.200}") from exc
            names = [name for name, _ in served]
            if expected not in names:
                raise InputError(
                    f"{self.what}: {e.url} serves {', '.join(map(repr, names)) or 'no model'}, but the "
                    f"config names {expected!r} (set openai.model to the served name, or point "
                    f"openai.base_urls at a server of {expected!r})"
                )
            lens += [n for name, n in served if name == expected and isinstance(n, int)]
        if not reached:
            raise BackendError(self.failure_report(1))
        return min(lens) if lens else None

    def close(self) -> None:
        """Close the clients and stop the loop's thread."""
        if self._loop.is_closed():
            return

        async def close_all() -> None:
            for e in self.endpoints:
                if e._http is not None:
                    await e._http.aclose()

        try:
            self.run(close_all())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()


def serving_config(values: dict[str, Any] | None, what: str) -> ServingConfig:
    """A :class:`ServingConfig` from a config's ``openai`` block."""
    values = dict(values or {})
    known = set(ServingConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{what}: unknown openai setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    urls = values.get("base_urls") or []
    if isinstance(urls, str):
        urls = [urls]
    values["base_urls"] = list(urls)
    return ServingConfig(**values)


__all__ = ["Endpoint", "EndpointPool", "MalformedResponse", "ServingConfig", "root_url", "serving_config"]
