"""itc-gateway: the OpenAI-compatible API in front of the strategies.

One gateway per test session, in-process (uvicorn in a thread) on the session's vLLM
engines (the toy policy and the trained test PRM), called with the ``openai`` client, sync
and async. Its answers and usage are compared with the run loop's on the same problems and
seeds; then batching, streaming and every error path."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import VLLM_TEST_OVERRIDES, compose_app, compose_run

openai = pytest.importorskip("openai")

KEY = "test-key"
SEED = 7
N = 4
STRATEGIES = ("majority", "best_of_n", "beam_search")


@pytest.fixture(scope="session")
def gateway(vllm_policy, vllm_prm):
    """The session's gateway, serving the session's engines on a free port."""
    import uvicorn

    from itc.cli.gateway import build_gateway
    from itc.cli.gateway_app import create_app

    cfg = compose_app("gateway", [*VLLM_TEST_OVERRIDES, "gateway.batch_window_ms=200", "gateway.max_n=16"])
    gw = build_gateway(cfg, api_key=KEY, policy=vllm_policy, prm=vllm_prm)
    server = uvicorn.Server(uvicorn.Config(create_app(gw), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the gateway did not start"
        time.sleep(0.05)
    gw.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    yield gw
    server.should_exit = True
    thread.join(timeout=30)
    gw.close()


@pytest.fixture(scope="session")
def toy_problems():
    from itc.data import load_problems

    return load_problems(compose_run(["dataset.num_problems=60"]).dataset)


def _client(gw, key: str = KEY):
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def _async_client(gw):
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)


def _ask(problem: str, strategy: str, **itc) -> dict:
    return {"model": "itc", "messages": [{"role": "user", "content": problem}], "seed": SEED,
            "extra_body": {"itc": {"strategy": strategy, "n": N, **itc}}}


_reference: dict[str, list] = {}


@pytest.fixture
def reference(toy_problems, vllm_policy, vllm_prm):
    """The run loop's results on the first 20 toy problems, under the ids the gateway gives
    them (so with the same request seeds), one batch as itc-run runs it."""
    from itc.cli.gateway_batching import request_problem_id
    from itc.runner import _run_batch
    from itc.types import Problem
    from strategies import build_strategy

    def get(strategy: str):
        if strategy not in _reference:
            problems = [Problem(request_problem_id(p.problem, SEED), p.problem, p.answer) for p in toy_problems[:20]]
            cfg = compose_run([f"strategy={strategy}", f"n={N}"])
            done, failed = _run_batch(build_strategy(cfg.strategy), problems, vllm_policy, vllm_prm)
            assert not failed
            _reference[strategy] = [r for _, r in done]
        return _reference[strategy]

    return get


def _check_against(choice, usage, result) -> None:
    assert choice.itc["problem_id"] == result.problem_id
    assert choice.itc["answer"] == result.chosen_answer
    text = "" if result.chosen_index is None else result.candidates[result.chosen_index].text
    content = choice.message.content if hasattr(choice, "message") else choice.text
    assert content == text
    assert usage.prompt_tokens == result.prompt_tokens
    assert usage.completion_tokens == result.completion_tokens
    assert usage.prm_tokens == result.prm_tokens


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_async_client_answers_equal_the_run_loops(gateway, toy_problems, reference, strategy):
    async def main():
        async with _async_client(gateway) as client:
            return await asyncio.gather(
                *(client.chat.completions.create(**_ask(p.problem, strategy)) for p in toy_problems[:20])
            )

    before = gateway.batcher.stats.batches
    responses = asyncio.run(main())
    for resp, result in zip(responses, reference(strategy), strict=True):
        _check_against(resp.choices[0], resp.usage, result)
        assert resp.choices[0].itc["strategy"] == strategy and resp.choices[0].itc["n"] == N
    assert gateway.batcher.stats.batches - before <= 3  # 20 concurrent requests, batched


@pytest.mark.vllm
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sync_client_answers_alone_equal_the_batched_ones(gateway, toy_problems, reference, strategy):
    client = _client(gateway)
    ref = reference(strategy)
    resp = client.chat.completions.create(**_ask(toy_problems[0].problem, strategy))
    _check_against(resp.choices[0], resp.usage, ref[0])
    # the model-name shortcut and the completions endpoint, two problems in one request
    resp = client.completions.create(
        model=f"itc/{strategy}@{N}", prompt=[p.problem for p in toy_problems[1:3]], seed=SEED,
        extra_body={"return_candidates": True},
    )
    for choice, result in zip(resp.choices, ref[1:3], strict=True):
        assert choice.itc["answer"] == result.chosen_answer and choice.text
        assert [c["answer"] for c in choice.itc["candidates"]] == [c.answer for c in result.candidates]
        if strategy != "majority":
            assert [c["score"] for c in choice.itc["candidates"]] == pytest.approx([c.score for c in result.candidates])
    assert resp.usage.completion_tokens == sum(r.completion_tokens for r in ref[1:3])


@pytest.mark.vllm
def test_streaming_sends_progress_then_the_answer(gateway, toy_problems, reference):
    ref = reference("beam_search")[3]
    stream = _client(gateway).chat.completions.create(
        **_ask(toy_problems[3].problem, "beam_search"), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    progress = [c.itc_progress for c in chunks if getattr(c, "itc_progress", None)]
    assert len(progress) >= 2 and [p["step"] for p in progress] == list(range(1, len(progress) + 1))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == ref.candidates[ref.chosen_index].text
    assert chunks[-1].usage.completion_tokens == ref.completion_tokens


@pytest.mark.vllm
def test_32_concurrent_requests_share_few_batches_and_engine_calls(gateway, toy_problems):
    stats = gateway.batcher.stats
    before = (stats.batches, stats.policy_calls)

    async def main():
        async with _async_client(gateway) as client:
            return await asyncio.gather(
                *(client.chat.completions.create(**_ask(p.problem, "majority", n=2)) for p in toy_problems[20:52])
            )

    responses = asyncio.run(main())
    assert len(responses) == 32 and all(r.choices[0].itc["n"] == 2 for r in responses)
    batches, calls = stats.batches - before[0], stats.policy_calls - before[1]
    assert batches <= 3 and calls <= 3, (batches, calls)  # majority: one engine call per batch


@pytest.mark.vllm
def test_the_log_names_requests_by_id_and_never_their_prompt(gateway, toy_problems, caplog):
    import logging

    problem = toy_problems[8].problem
    with caplog.at_level(logging.INFO, logger="itc.gateway"):
        r = _client(gateway).chat.completions.create(**_ask(problem, "majority"))
    text = "\n".join(rec.getMessage() for rec in caplog.records if rec.name == "itc.gateway")
    assert f"request {r.choices[0].itc['request_id']}: done" in text
    assert problem not in text


def test_models_lists_the_default_and_every_strategy(gateway):
    ids = [m.id for m in _client(gateway).models.list()]
    assert ids[0] == "itc" and {"itc/majority", "itc/best_of_n", "itc/beam_search"} <= set(ids)


# --- errors ----------------------------------------------------------------------------------


def _body(problem: str, strategy: str, **itc) -> dict:
    """A streaming request's body, as the openai client sends ``_ask``'s."""
    ask = _ask(problem, strategy, **itc)
    return {**{k: v for k, v in ask.items() if k != "extra_body"}, **ask["extra_body"], "stream": True}


def _post(gw, body, key: str | None = KEY, path: str = "/v1/chat/completions", **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, dict) and "extra_body" in body:  # as the openai client sends it
        body = {**{k: v for k, v in body.items() if k != "extra_body"}, **body["extra_body"]}
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(gw.url + path, content=content, headers=headers, **kw)


BAD = [
    (b"{not json", "body: not valid JSON"),
    ({"messages": "2+2"}, "messages: expected a non-empty list"),
    ({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "1+1"}]},
     "messages[0].role: 'system': allowed: user"),
    ({**_ask("1+1", "tree_search")}, "itc.strategy: unknown strategy 'tree_search'; allowed: "),
    ({**_ask("1+1", "beam_search", width=2)}, "itc.width: not a setting of strategy 'beam_search'; allowed: "),
    ({**_ask("1+1", "beam_search", beam_width=0)}, "itc.beam_width=0: expected an integer or null (>= 1)"),
    ({**_ask("1+1", "best_of_n", selection="best")}, "selection 'best' is not one of highest, weighted_majority, majority"),
    ({**_ask("1+1", "best_of_n", selection="highest/last")}, "itc.selection: 'highest/last': the aggregation is the PRM's"),
    ({**_ask("1+1", "beam_search", dedupe={"_target_": "os.getcwd"})}, "itc.dedupe: {\"_target_\": \"os.getcwd\"}: expected a number"),
    ({**_ask("1+1", "beam_search", selection="${oc.env:HOME}")}, "itc.selection: \"${oc.env:HOME}\": expected"),
    ({**_ask("1+1", {"a": 1})}, "itc.strategy: {'a': 1}: expected a strategy name among"),
    ({**_ask("1+1", "majority", n=17)}, "itc.n: 17 is over the limit gateway.max_n=16"),
    ({"model": "itc/majority@x", "messages": [{"role": "user", "content": "1+1"}]}, "model: 'itc/majority@x'"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "1+1"}]}, "model: 'gpt-4' is not served; expected 'itc'"),
    ({"model": "itc", "messages": [{"role": "user", "content": "1+1"}], "max_tokens": 10**6},
     "max_tokens: 1000000 is over the limit gateway.max_tokens=4096"),
    ({"model": "itc", "messages": [{"role": "user", "content": "1+1"}], "n": 3}, "n: one choice per request"),
    ({"model": "itc", "messages": [{"role": "user", "content": "Start at 5 and do A+1. " * 100}]},
     "but policy 'toy' has a context of 1024 tokens"),
]


@pytest.mark.parametrize("body, message", BAD, ids=range(len(BAD)))
def test_bad_requests_get_400_naming_the_field_and_allowed_values(gateway, body, message):
    r = _post(gateway, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]


def test_a_strategy_that_needs_a_prm_gets_400_where_there_is_none():
    from itc.cli.gateway_app import ApiError, StrategyCatalog

    catalog = StrategyCatalog(compose_app("gateway", []).strategy, 4, has_prm=False, aggregation=None, max_n=64)
    assert "itc/beam_search" not in catalog.served() and "majority" in catalog.served()
    with pytest.raises(ApiError, match="strategy 'beam_search' needs a PRM .* allowed without one: .*majority") as e:
        catalog.resolve("itc", {"strategy": "beam_search"}, None, "itc")
    assert e.value.status == 400 and e.value.param == "itc.strategy"


def test_missing_or_wrong_api_key_gets_401(gateway):
    for key in (None, "wrong"):
        r = _post(gateway, _ask("1+1", "majority"), key=key)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        _client(gateway, key="wrong").models.list()


class Gate:
    """Holds the policy's calls after the first ``free`` until opened: a request that stays
    in flight as long as a test needs."""

    def __init__(self) -> None:
        self.close()

    def close(self, free: int = 0) -> None:
        self.calls, self.free, self.opened = 0, free, threading.Event()

    def open(self) -> None:
        self.opened.set()

    def wrap(self, generate):
        def gated(*args, **kwargs):
            self.calls += 1
            if self.calls > self.free:
                assert self.opened.wait(timeout=300), "the gate was never opened"
            return generate(*args, **kwargs)

        return gated


@pytest.fixture
def gate(vllm_policy, monkeypatch):
    g = Gate()
    monkeypatch.setattr(vllm_policy, "generate", g.wrap(vllm_policy.generate))
    yield g
    g.open()


def _until(condition, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


@pytest.mark.vllm
def test_a_full_gateway_answers_429(gateway, toy_problems, gate):
    b = gateway.batcher
    limits = (b.max_concurrent, b.max_queue)
    b.max_concurrent, b.max_queue = 1, 0
    try:
        with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json=_body(toy_problems[5].problem, "beam_search", n=8), timeout=120):
            r = _post(gateway, _ask("1+1", "majority"))  # the one place is taken
            assert r.status_code == 429, r.text
            assert "gateway.max_queue=0" in r.json()["error"]["message"]
            gate.open()
    finally:
        b.max_concurrent, b.max_queue = limits


@pytest.mark.vllm
def test_a_backend_failure_gets_502_and_the_gateway_serves_on(gateway, vllm_policy, monkeypatch):
    from itc.errors import BackendError

    def dead(*args, **kwargs):
        raise BackendError("policy 'toy': the vllm engine failed (EngineDeadError: test)")

    monkeypatch.setattr(vllm_policy, "generate", dead)
    r = _post(gateway, _ask("2+2", "majority"))
    assert r.status_code == 502 and "policy 'toy': the vllm engine failed" in r.json()["error"]["message"]
    monkeypatch.undo()
    assert _client(gateway).chat.completions.create(**_ask("2+2", "majority")).choices[0].message.content


@pytest.mark.vllm
def test_a_client_that_disconnects_has_its_work_dropped_at_the_next_step(gateway, toy_problems, gate):
    stats = gateway.batcher.stats
    problem = max(toy_problems[:20], key=lambda p: p.level).problem  # a long search
    gate.open()
    full = _client(gateway).chat.completions.create(**_ask(problem, "beam_search", n=8))
    full_steps = stats.recent[full.choices[0].itc["request_id"]]["steps"]
    gone, cancelled = stats.disconnected, stats.cancelled

    # the same request from a streaming client that leaves after the first progress report;
    # the policy's second call waits until the gateway has seen it leave
    gate.close(free=1)
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json=_body(problem, "beam_search", n=8), timeout=120) as r:
        first = json.loads(next(line for line in r.iter_lines() if line.startswith("data: "))[6:])
    rid = first["id"].removeprefix("chatcmpl-")
    _until(lambda: stats.disconnected == gone + 1, "the gateway saw the client leave")
    gate.open()
    _until(lambda: stats.recent.get(rid, {}).get("status") == "cancelled", "the request was cancelled")
    assert stats.recent[rid]["steps"] < full_steps
    assert stats.cancelled == cancelled + 1

    # a client that stops waiting for a plain answer
    gate.close()
    with pytest.raises(httpx.ReadTimeout):
        _post(gateway, _ask(toy_problems[7].problem, "beam_search", n=8), timeout=0.5)
    _until(lambda: stats.disconnected == gone + 2, "the gateway saw the plain client leave")
    gate.open()
    _until(lambda: stats.cancelled == cancelled + 2, "the plain request was cancelled")
    assert _client(gateway).chat.completions.create(**_ask("3+4", "majority")).choices[0].message.content is not None


# --- the command -----------------------------------------------------------------------------


def _gateway_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("ITC_GATEWAY_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "itc.cli.gateway", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


@pytest.mark.parametrize("args, message", [
    (("--host", "0.0.0.0"), "--host 0.0.0.0 is reachable from other machines: give an API key"),
    (("gateway.max_n=0",), "gateway.max_n=0: expected an integer (>= 1)"),
    (("strategy=beam_search",), "strategy 'beam_search' needs a process reward model"),
])
def test_the_command_refuses_bad_settings_before_any_engine(args, message):
    from test_bad_input import error_line

    assert message in error_line(_gateway_cli(*args), "itc-gateway")


def test_pop_options_takes_host_port_and_key_out_of_the_hydra_arguments():
    from itc.cli.gateway import pop_options

    argv = ["itc-gateway", "prm=toy", "--host", "0.0.0.0", "--port=9000", "--api-key", "k"]
    assert pop_options(argv) == {"--host": "0.0.0.0", "--port": "9000", "--api-key": "k"}
    assert argv == ["itc-gateway", "prm=toy", "gateway.host=0.0.0.0", "gateway.port=9000"]
