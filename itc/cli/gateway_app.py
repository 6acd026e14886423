"""The gateway's HTTP side: an OpenAI-compatible FastAPI app in front of the batcher.

``/v1/chat/completions`` and ``/v1/completions`` take a problem (the user message, or the
prompt), choose a strategy and its settings (:class:`StrategyCatalog`), queue the request's
problems in the :class:`~itc.cli.gateway_batching.Batcher` and answer with the chosen
solution, the request's whole cost in ``usage`` and, if asked, every candidate. Errors have
OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``); the request fields,
response fields and limits are in docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from omegaconf import DictConfig, OmegaConf

from itc.cli.gateway_batching import Batcher, Job, QueueFull, request_problem_id
from itc.config_schema import StrategySchema, check
from itc.errors import BackendError, InputError
from itc.types import Problem, StrategyResult
from strategies import build_strategy
from strategies.selection import SELECTIONS

log = logging.getLogger("itc.gateway")

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
RESERVED = ("strategy", "n", "return_candidates")  # keys of the "itc" block beside the settings
_SHARED = {f.name for f in fields(StrategySchema)}


class ApiError(Exception):
    """An error answer: HTTP ``status`` with OpenAI's error body."""

    TYPES: ClassVar[dict[int, str]] = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error", 502: "backend_error"}

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.status}}


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param)


class StrategyCatalog:
    """The strategies a request may choose (``configs/strategy/*.yaml``) and the default (the
    configured ``strategy`` group with its command-line overrides)."""

    def __init__(self, default: DictConfig, n: int, has_prm: bool, aggregation: str | None, max_n: int) -> None:
        self.default_name = str(default.name)
        self.n, self.has_prm, self.aggregation, self.max_n = n, has_prm, aggregation, max_n
        self.entries: dict[str, dict[str, Any]] = {}
        for path in sorted(resources.files("configs").joinpath("strategy").iterdir(), key=lambda p: p.name):
            if path.name.endswith(".yaml"):
                entry = OmegaConf.to_container(OmegaConf.create(path.read_text()), resolve=False)
                self.entries[path.name.removesuffix(".yaml")] = entry
        self.entries[self.default_name] = OmegaConf.to_container(default, resolve=True)
        self._needs_prm: dict[str, bool] = {}
        for name, entry in self.entries.items():
            strategy = build_strategy(OmegaConf.create({**entry, "n": 1}))
            self._needs_prm[name] = strategy.needs_prm

    def served(self) -> list[str]:
        """The strategies this gateway can run (those needing a PRM only if it has one)."""
        return [k for k in self.entries if self.has_prm or not self._needs_prm[k]]

    def resolve(self, model: str | None, itc: dict[str, Any], temperature: float | None, model_name: str) -> dict[str, Any]:
        """The strategy config of a request: its ``_target_``, ``name``, ``n`` and settings."""
        name, n, n_param = None, None, "itc.n"
        if model not in (None, model_name):
            if not isinstance(model, str) or not model.startswith("itc/"):
                raise _bad("model", f"{model!r} is not served; expected {model_name!r} or "
                           f"'itc/<strategy>@<n>' with a strategy among {', '.join(self.served())}")
            name, at, n_text = model[4:].partition("@")
            if at:
                if not n_text.isdigit():
                    raise _bad("model", f"{model!r}: the budget after '@' must be a positive integer")
                n, n_param = int(n_text), "model"
        name = itc.get("strategy", name) or self.default_name
        param = "itc.strategy" if "strategy" in itc else "model"
        if not isinstance(name, str):
            raise _bad(param, f"{name!r}: expected a strategy name among {', '.join(self.served())}")
        if name not in self.entries:
            raise _bad(param, f"unknown strategy {name!r}; allowed: {', '.join(self.served())}")
        if not self.has_prm and self._needs_prm[name]:
            raise _bad(param, f"strategy {name!r} needs a PRM and this gateway has none (start it with "
                       f"prm=<entry>); allowed without one: {', '.join(self.served())}")
        if "n" in itc:
            n, n_param = itc["n"], "itc.n"
        base = self.entries[name]
        settings = {**base, "n": self.n if base["n"] == "${n}" else base["n"]}  # greedy's is 1
        if n is not None:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise _bad(n_param, f"{n!r}: expected an integer (>= 1)")
            if n > self.max_n:
                raise _bad(n_param, f"{n} is over the limit gateway.max_n={self.max_n}")
            settings["n"] = n
        allowed = sorted(k for k in base if k not in ("_target_", "name", "n"))
        given = {k: v for k, v in itc.items() if k not in RESERVED}
        for key, value in given.items():
            if key not in allowed:
                raise _bad(f"itc.{key}", f"not a setting of strategy {name!r}; allowed: "
                           f"{', '.join([*RESERVED, *allowed])}")
            # plain values only: a mapping could name a class for Hydra to instantiate, and
            # "${...}" is an OmegaConf interpolation (an environment variable, say)
            if not isinstance(value, (str, int, float, bool, type(None))) or "${" in str(value):
                raise _bad(f"itc.{key}", f"{json.dumps(value)}: expected a number, a string, true, "
                           "false or null (no interpolation)")
        if temperature is not None and "temperature" in allowed and "temperature" not in given:
            given["temperature"] = temperature
        if isinstance(given.get("selection"), str) and "/" in given["selection"]:
            given["selection"] = self._selection(given["selection"])
        errors = check(StrategySchema, {k: v for k, v in given.items() if k in _SHARED}, "itc")
        if errors:
            raise ApiError(400, "; ".join(errors), errors[0].split("=")[0])
        settings.update(given)
        try:
            build_strategy(OmegaConf.create(settings))  # the strategy's own checks
        except (InputError, ValueError, TypeError) as e:
            raise ApiError(400, f"itc: {e}", "itc") from None
        return settings

    def _selection(self, rule: str) -> str:
        selection, _, aggregation = rule.partition("/")
        if selection not in SELECTIONS[:2] or aggregation != self.aggregation:
            allowed = [*SELECTIONS, *(f"{s}/{self.aggregation}" for s in SELECTIONS[:2])]
            raise _bad("itc.selection", f"{rule!r}: the aggregation is the PRM's (prm.aggregation="
                       f"{self.aggregation}); allowed: {', '.join(allowed)}")
        return selection


@dataclass
class Limits:
    max_n: int
    max_tokens: int
    model_name: str


class Gateway:
    """What the app serves: the policy and PRM, the strategy catalog, the batcher, the limits."""

    def __init__(self, cfg: DictConfig, policy: Any, prm: Any = None, api_key: str | None = None) -> None:
        g = cfg.gateway
        self.policy, self.prm, self.api_key = policy, prm, api_key or None
        self.limits = Limits(int(g.max_n), int(g.max_tokens), str(g.model_name))
        self.catalog = StrategyCatalog(
            cfg.strategy, int(cfg.n), prm is not None, getattr(prm, "aggregation", None), self.limits.max_n
        )
        self.batcher = Batcher(
            policy, prm, int(g.max_concurrent), int(g.max_queue), float(g.batch_window_ms) / 1000,
            float(g.batch_max_wait_ms) / 1000, bool(g.log_prompts),
        )

    def close(self) -> None:
        self.batcher.close()


# --- requests -------------------------------------------------------------------------------


@dataclass
class Parsed:
    """A request after checking: its problems, strategy settings and options."""

    problems: list[str]
    settings: dict[str, Any]
    seed: int | None
    max_tokens: int | None
    stream: bool
    include_usage: bool
    return_candidates: bool
    model: str


def _opt(body: dict[str, Any], key: str, types: tuple[type, ...], what: str) -> Any:
    value = body.get(key)
    if value is not None and (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)):
        raise _bad(key, f"{value!r}: expected {what}")
    return value


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise _bad(where, "expected a string or a list of text parts")


def _problems(body: dict[str, Any], chat: bool) -> list[str]:
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages", "expected a non-empty list of messages")
        users = []
        for i, m in enumerate(messages):
            role = m.get("role") if isinstance(m, dict) else None
            if role != "user":
                raise _bad(f"messages[{i}].role", f"{role!r}: allowed: user (one message, the problem; the "
                           "policy's config sets any system prompt)")
            users.append(_text(m.get("content"), f"messages[{i}].content"))
        if len(users) != 1:
            raise _bad("messages", f"{len(users)} user messages; expected one, the problem")
        problems = users
    else:
        prompt = body.get("prompt")
        problems = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(problems, list) or not problems or not all(isinstance(p, str) for p in problems):
            raise _bad("prompt", "expected a string or a non-empty list of strings")
    for i, p in enumerate(problems):
        if not p.strip():
            raise _bad("messages" if chat else "prompt", f"problem {i} is empty")
    return problems


def parse_request(body: Any, chat: bool, gateway: Gateway) -> Parsed:
    """Check a request body; :class:`ApiError` (400) names the first wrong field."""
    if not isinstance(body, dict):
        raise _bad("body", "expected a JSON object")
    problems = _problems(body, chat)
    itc = body.get("itc", {})
    if not isinstance(itc, dict):
        raise _bad("itc", "expected an object of strategy settings")
    model = _opt(body, "model", (str,), "a string")
    if _opt(body, "n", (int,), "an integer") not in (None, 1):
        raise _bad("n", "one choice per request; the strategy's budget is itc.n")
    for key in ("logprobs", "tools", "functions"):
        if body.get(key) not in (None, False, []):
            raise _bad(key, "not supported by the gateway")
    temperature = _opt(body, "temperature", (int, float), "a number")
    if temperature is not None and temperature < 0:
        raise _bad("temperature", f"{temperature}: expected a number (>= 0)")
    seed = _opt(body, "seed", (int,), "an integer")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _bad(key, f"{max_tokens!r}: expected an integer (>= 1)")
        if max_tokens > gateway.limits.max_tokens:
            raise _bad(key, f"{max_tokens} is over the limit gateway.max_tokens={gateway.limits.max_tokens}")
    stream = bool(_opt(body, "stream", (bool,), "true or false"))
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("stream_options", "expected an object")
    rc = itc.get("return_candidates", body.get("return_candidates", False))
    if not isinstance(rc, bool):
        raise _bad("return_candidates", f"{rc!r}: expected true or false")
    settings = gateway.catalog.resolve(model, itc, temperature, gateway.limits.model_name)
    return Parsed(problems, settings, seed, max_tokens, stream, bool(options.get("include_usage")), rc,
                  model or gateway.limits.model_name)


# --- responses ------------------------------------------------------------------------------


def usage_of(results: list[StrategyResult]) -> dict[str, Any]:
    """OpenAI's ``usage`` for a request's results: every sample's prompt (``prompt_tokens``,
    those read from the prefix cache in ``prompt_tokens_details.cached_tokens``), every
    generated token, kept or pruned, and the PRM's input tokens (``prm_tokens``)."""
    prompt = sum(r.prompt_tokens for r in results)
    computed = sum(r.prompt_tokens_computed for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": prompt - computed},
        "prm_tokens": sum(r.prm_tokens for r in results),
        "prm_tokens_computed": sum(r.prm_tokens_computed for r in results),
    }


def _chosen(result: StrategyResult) -> tuple[str, str]:
    """The chosen solution's text and finish reason (no answer at all: empty)."""
    if result.chosen_index is None:
        return "", "stop"
    c = result.candidates[result.chosen_index]
    return c.text, "stop" if c.finished else "length"


def itc_block(result: StrategyResult, parsed: Parsed, request_id: str, problem_id: str) -> dict[str, Any]:
    """What the gateway adds to each choice: the strategy, the choice and, if asked, every candidate."""
    block = {
        "request_id": request_id,
        "problem_id": problem_id,
        "strategy": parsed.settings["name"],
        "n": parsed.settings["n"],
        "selection": result.selection,
        "chosen_index": result.chosen_index,
        "answer": result.chosen_answer,
    }
    if parsed.return_candidates:
        block["candidates"] = [
            {"text": c.text, "answer": c.answer, "score": c.score, "step_scores": c.step_scores,
             "finished": c.finished, "completion_tokens": c.completion_tokens}
            for c in result.candidates
        ]
    return block


class _Request:
    """One HTTP request in flight: its id, jobs and response shape."""

    def __init__(self, parsed: Parsed, chat: bool, gateway: Gateway) -> None:
        self.parsed, self.chat, self.gateway = parsed, chat, gateway
        self.id = uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        loop = asyncio.get_running_loop()
        self.events: asyncio.Queue | None = asyncio.Queue() if parsed.stream else None
        self.jobs = [
            Job(
                request_id=self.id if len(parsed.problems) == 1 else f"{self.id}-{i}",
                problem=Problem(id=request_problem_id(text, parsed.seed), problem=text, answer=""),
                settings=parsed.settings, max_tokens=parsed.max_tokens, loop=loop,
                future=loop.create_future(), events=self.events,
            )
            for i, text in enumerate(parsed.problems)
        ]

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.id

    def cancel(self) -> None:
        """Drop the work left (the client went away)."""
        left = [job for job in self.jobs if not job.future.done()]
        if left:
            self.gateway.batcher.stats.disconnected += 1
            log.info("request %s: its client went away", self.id)
        for job in left:
            job.cancelled.set()

    async def results(self) -> list[StrategyResult]:
        try:
            return list(await asyncio.gather(*(j.future for j in self.jobs)))
        except BackendError as e:
            raise ApiError(502, f"backend failure: {e}") from None
        except InputError as e:
            raise ApiError(400, f"messages: {e}" if self.chat else f"prompt: {e}", "messages" if self.chat else "prompt") from None
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - named for the client; the log has the traceback
            raise ApiError(502, f"the strategy failed ({type(e).__name__}: {e})") from None

    def choice(self, i: int, result: StrategyResult) -> dict[str, Any]:
        text, finish = _chosen(result)
        block = itc_block(result, self.parsed, self.jobs[i].request_id, self.jobs[i].problem.id)
        if self.chat:
            return {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "itc": block}
        return {"index": i, "text": text, "finish_reason": finish, "logprobs": None, "itc": block}

    def response(self, results: list[StrategyResult]) -> dict[str, Any]:
        return {
            "id": self.response_id, "object": self.object, "created": self.created, "model": self.parsed.model,
            "choices": [self.choice(i, r) for i, r in enumerate(results)], "usage": usage_of(results),
        }

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        data = {"id": self.response_id, "object": obj, "created": self.created, "model": self.parsed.model,
                "choices": choices, **extra}
        return f"data: {json.dumps(data)}\n\n"

    async def stream(self) -> AsyncIterator[str]:
        """Progress chunks (no choices, an ``itc_progress`` field) while the search runs, then
        the answer, the finish, the usage if asked, and ``[DONE]``."""
        done = asyncio.ensure_future(self.results())
        try:
            while not done.done():
                getter = asyncio.ensure_future(self.events.get())
                await asyncio.wait({done, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield self.chunk([], itc_progress=getter.result())
                else:
                    getter.cancel()
            while not self.events.empty():  # reports that came with the answer
                yield self.chunk([], itc_progress=self.events.get_nowait())
            try:
                results = done.result()
            except ApiError as e:
                yield f"data: {json.dumps(e.body())}\n\n"
                yield "data: [DONE]\n\n"
                return
            for i, r in enumerate(results):
                text, finish = _chosen(r)
                block = itc_block(r, self.parsed, self.jobs[i].request_id, self.jobs[i].problem.id)
                if self.chat:
                    yield self.chunk([{"index": i, "delta": {"role": "assistant", "content": text}, "finish_reason": None}])
                    yield self.chunk([{"index": i, "delta": {}, "finish_reason": finish, "itc": block}])
                else:
                    yield self.chunk([{"index": i, "text": text, "finish_reason": finish, "logprobs": None, "itc": block}])
            if self.parsed.include_usage:
                yield self.chunk([], usage=usage_of(results))
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or the answer is out): drop what is left
            self.cancel()
            done.cancel()


# --- the app --------------------------------------------------------------------------------


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app serving ``gateway``."""
    app = FastAPI(title="itc-gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = gateway

    def error(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    def authenticate(request: Request) -> None:
        key = gateway.api_key
        if key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                what = "no API key" if not given else "a wrong API key"
                raise ApiError(401, f"{what}: send the header 'Authorization: Bearer <key>' with the "
                               "key the gateway was started with")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error(e)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authenticate(request)
        names = [gateway.limits.model_name, *(f"itc/{s}" for s in gateway.catalog.served())]
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "itc"} for m in names]}

    @app.get("/itc/stats")
    async def stats(request: Request) -> dict[str, Any]:
        authenticate(request)
        return gateway.batcher.stats.as_dict()

    async def complete(request: Request, chat: bool) -> Any:
        try:
            authenticate(request)
            try:
                body = json.loads(await request.body())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise _bad("body", f"not valid JSON ({e})") from None
            parsed = parse_request(body, chat, gateway)
            req = _Request(parsed, chat, gateway)
            try:
                gateway.batcher.submit(req.jobs)
            except QueueFull as e:
                raise ApiError(429, str(e)) from None
        except ApiError as e:
            log.info("request rejected (%d): %s", e.status, e.message)
            return error(e)
        log.info("request %s: %s, %d problem(s), strategy %s n=%s", req.id, request.url.path,
                 len(req.jobs), parsed.settings["name"], parsed.settings["n"])
        if parsed.stream:
            return StreamingResponse(req.stream(), media_type="text/event-stream")
        answer = asyncio.ensure_future(req.results())
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({answer, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not answer.done():  # the client went away: its work stops at the next step
            req.cancel()
            answer.cancel()
            return JSONResponse({}, status_code=499)
        try:
            return req.response(answer.result())
        except ApiError as e:
            return error(e)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await complete(request, chat=False)

    return app


async def _disconnected(request: Any) -> None:
    """Return once the client has disconnected (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


__all__ = ["LOCAL_HOSTS", "ApiError", "Gateway", "StrategyCatalog", "create_app", "parse_request", "usage_of"]
