"""The policy and the PRM behind OpenAI-compatible servers (``backend=openai``), with faults.

Real ``vllm serve`` processes on the toy models, started once for this module by itc-serve's
own code (:mod:`itc.cli.serve`): two policy servers and one PRM server. Hung and malformed
servers are small local stand-ins (no vLLM needed)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import compose_run

from itc.errors import BackendError, InputError

pytestmark = pytest.mark.vllm

SERVER_OVERRIDES = [
    "policy.vllm.gpu_memory_utilization=0.04",
    "policy.vllm.enforce_eager=true",
    "prm.vllm.gpu_memory_utilization=0.04",
]
FAST_RETRIES = ["max_retries=2", "backoff_s=0.2", "timeout_s=60"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """The module's servers: policy ``a`` and ``b``, and ``prm``; a killed one can be restarted."""

    def __init__(self, log_dir: Path) -> None:
        from itc.cli.serve import Server, server_command

        cfg = compose_run(["prm=toy", *SERVER_OVERRIDES])
        groups = {"policy": cfg.policy, "prm": cfg.prm}
        from omegaconf import OmegaConf

        self.by_name: dict[str, Server] = {}
        for name, role in (("a", "policy"), ("b", "policy"), ("prm", "prm")):
            port = _free_port()
            argv, env = server_command(role, OmegaConf.to_container(groups[role], resolve=True), "127.0.0.1", port)
            self.by_name[name] = Server(role, argv, env, "127.0.0.1", port, log_dir / f"{name}.log")

    def url(self, name: str) -> str:
        return self.by_name[name].url

    def start(self, *names: str) -> None:
        from itc.cli.serve import wait_healthy

        for n in names:
            self.by_name[n].start()
        wait_healthy([self.by_name[n] for n in names], timeout=600, say=lambda m: None)

    def kill(self, name: str) -> None:
        self.by_name[name].stop(grace=0)  # SIGKILL at once: a crash, not a shutdown

    def ensure(self, *names: str) -> None:
        dead = [n for n in names if not self.by_name[n].healthy()]
        if dead:
            self.start(*dead)

    def stop_all(self) -> None:
        for s in self.by_name.values():
            s.stop(grace=5)


@pytest.fixture(scope="module")
def servers(tmp_path_factory, toy_policy_path):
    from prm.toy import resolve_prm_model

    if resolve_prm_model("toy", train=False).endswith("(untrained)"):
        pytest.skip("the toy PRM is not trained (itc-train-prm); these tests never train it")
    s = Servers(tmp_path_factory.mktemp("servers"))
    try:
        s.start("a", "b", "prm")
        yield s
    finally:
        s.stop_all()


def _policy(urls: list[str], *extra: str):
    from itc.policy import build_policy

    urls_text = ",".join(urls)
    cfg = compose_run(["policy.backend=openai", f"policy.openai.base_urls=[{urls_text}]", *extra])
    return build_policy(cfg.policy, seed=0)


def _run_cfg(policy_urls: list[str], *extra: str):
    urls_text = ",".join(policy_urls)
    return compose_run(
        ["policy.backend=openai", f"policy.openai.base_urls=[{urls_text}]", "dataset.num_problems=12", "n=4", *extra]
    )


def _lines(run_dir: Path) -> list[tuple]:
    """What each line of a run says, without what depends on timing (wall time, and prompt
    tokens read from a prefix cache, which depends on what else was in flight)."""
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    return [
        (
            r["problem_id"], r["chosen_answer"], r["correct"], r["prompt_tokens"], r["completion_tokens"],
            [(c["text"], c["answer"], c["correct"], c["score"]) for c in r["candidates"]],
        )
        for r in records
    ]


# --- stand-ins: a hung server and a malformed one ------------------------------------------


class _Hung:
    """A socket that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def _fake_server(completions_body: bytes, model: str = "toy"):
    """A local HTTP server that lists ``model`` and answers every completion with ``completions_body``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(json.dumps({"object": "list", "data": [{"id": model, "max_model_len": 1024}]}).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(completions_body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def _choice(text: str = "1+1=2") -> dict:
    return {"index": 0, "text": text, "finish_reason": "stop", "stop_reason": None, "logprobs": None}


USAGE = {"prompt_tokens": 999, "completion_tokens": 3, "total_tokens": 1002}


@pytest.mark.parametrize(
    "body, said",
    [
        (b"{not json", "malformed response"),
        (json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "toy", "choices": [{"index": 0}], "usage": USAGE}).encode(), "without text"),
        (json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "toy", "choices": [_choice(), _choice()], "usage": USAGE}).encode(), "2 choices for a request of n=1"),
        (json.dumps({"id": "x", "object": "text_completion", "created": 0, "model": "toy", "choices": [_choice()]}).encode(), "no usage"),
    ],
    ids=["bad-json", "missing-field", "two-choices", "no-usage"],
)
def test_a_malformed_response_is_an_error_naming_the_endpoint(toy_policy_path, body, said):
    server, url = _fake_server(body)
    try:
        policy = _policy([url], *(f"policy.openai.{k}" for k in FAST_RETRIES))
        try:
            with pytest.raises(BackendError, match=said) as e:
                policy.generate([policy.format_prompt("1+1")], n=1, request_keys=["p"])
            assert url in str(e.value)
        finally:
            policy.close()
    finally:
        server.shutdown()


def test_no_server_answering_is_a_clear_error_naming_every_url(toy_policy_path):
    dead = [f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"]
    with pytest.raises(BackendError) as e:
        _policy(dead)
    assert all(u in str(e.value) for u in dead) and "connection failed" in str(e.value)


def test_concurrency_needs_servers():
    from itc.runner import run_experiment

    cfg = compose_run(["concurrency=4", "dataset.num_problems=2"])
    with pytest.raises(InputError, match="concurrency=4 .* policy.backend=openai"):
        run_experiment(cfg, "/nonexistent/never-written")


# --- real servers ---------------------------------------------------------------------------


def test_the_wrong_model_is_refused_at_start_with_both_names(servers):
    with pytest.raises(InputError, match=r"serves 'toy', but the config names 'qwen-7b'"):
        _policy([servers.url("a")], "policy.openai.model=qwen-7b")


def test_server_samples_match_the_request_seeds_and_count_tokens(servers):
    """The same keys give the same samples on either server; other keys, other samples;
    token counts and confidences are filled in."""
    a, b = _policy([servers.url("a")]), _policy([servers.url("b")])
    try:
        prompts = [a.format_prompt(f"{k}+{k + 1}+2") for k in range(3)]
        first = a.generate(prompts, n=3, one_step=True, request_keys=["x", "y", "z"], logprobs=2)
        again = b.generate(prompts, n=3, one_step=True, request_keys=["x", "y", "z"], logprobs=2)
        assert [[c.text for c in cs] for cs in first] == [[c.text for c in cs] for cs in again]
        apart = _policy([servers.url("b")], "policy.openai.parallel_sampling=false")
        try:  # one request per sample (a and b send a prompt's samples in one): the same samples
            one_request = apart.generate(prompts, n=3, one_step=True, request_keys=["x", "y", "z"], logprobs=2)
        finally:
            apart.close()
        assert [[(c.text, c.num_tokens) for c in cs] for cs in one_request] == [[(c.text, c.num_tokens) for c in cs] for cs in first]
        other = a.generate(prompts, n=3, one_step=True, request_keys=["u", "v", "w"])
        assert [[c.text for c in cs] for cs in first] != [[c.text for c in cs] for cs in other]
        for cs in first:
            for c in cs:
                assert c.num_tokens >= 1 and c.finish_reason in ("step", "eos", "length")
                assert len(c.token_confidence) == c.num_tokens
                assert 0 <= c.prompt_tokens_computed <= a.count_tokens(prompts[0]) + 2
    finally:
        a.close()
        b.close()


def test_server_prm_scores_match_the_in_process_engine(servers):
    """The toy PRM's scores over /pooling agree with the in-process vLLM pooling engine
    within 1e-4, with and without known steps (prefix reuse)."""
    from prm.scoring import build_prm

    cfg = compose_run(["prm=toy", "prm.backend=openai", f"prm.openai.base_urls=[{servers.url('prm')}]"])
    served = build_prm(cfg.prm)
    local_cfg = compose_run(["prm=toy", "prm.vllm.enforce_eager=true", "+prm.vllm.engine_kwargs.kv_cache_memory_bytes=67108864"])
    local = build_prm(local_cfg.prm)
    try:
        problems = ["A=3 B=4; A+B", "A=5 B=2; A+B+1"]
        cands = [[["A+B=7", "\\boxed{7}"], ["A+B=8"]], [["A+B=7", "7+1=8", "\\boxed{8}"]]]
        got, want = served.score(problems, cands), local.score(problems, cands)
        flat = lambda s: [x for p in s for c in p for x in c]
        assert len(flat(got)) == len(flat(want)) == 6
        assert max(abs(x - y) for x, y in zip(flat(got), flat(want))) < 1e-4
        known = [[1, 0], [2]]
        got_k, sent, computed = served.score_with_usage(problems, cands, known)
        want_k = local.score_with_usage(problems, cands, known)[0]
        assert [len(c) for p in got_k for c in p] == [1, 1, 1]
        assert max(abs(x - y) for x, y in zip(flat(got_k), flat(want_k))) < 1e-4
        assert sent == computed and all(s > 0 for s in sent)
    finally:
        served.close()


def test_concurrent_batches_give_identical_results(servers, tmp_path):
    from itc.runner import run_experiment

    one = run_experiment(_run_cfg([servers.url("a")], "batch_size=2", "concurrency=1"), tmp_path / "c1")
    four = run_experiment(_run_cfg([servers.url("a")], "batch_size=2", "concurrency=4"), tmp_path / "c4")
    assert _lines(tmp_path / "c1") == _lines(tmp_path / "c4")
    assert one["accuracy"] == four["accuracy"] and one["num_problems"] == 12


def test_a_hung_server_is_timed_out_and_its_requests_retried(servers, tmp_path):
    hung = _Hung()
    try:
        policy = _policy([hung.url, servers.url("a")], "policy.openai.timeout_s=3", "policy.openai.backoff_s=0.1")
        alone = _policy([servers.url("a")])
        try:
            prompts = [policy.format_prompt(f"{k}+1") for k in range(4)]
            keys = [f"k{k}" for k in range(4)]
            got = policy.generate(prompts, n=2, one_step=True, request_keys=keys)
            want = alone.generate(prompts, n=2, one_step=True, request_keys=keys)
            assert [[c.text for c in cs] for cs in got] == [[c.text for c in cs] for cs in want]
            assert "timed out" in (policy.pool.endpoints[0].last_error or "")
        finally:
            policy.close()
            alone.close()
        only_hung = _policy([hung.url], "policy.openai.timeout_s=1", "policy.openai.max_retries=1", "policy.openai.backoff_s=0.1")
    except BackendError as e:  # at start: the only server never answers /v1/models
        assert hung.url in str(e) and "timed out" in str(e)
    else:
        only_hung.close()
        pytest.fail("a policy on a hung server alone started")
    finally:
        hung.close()


def test_one_of_two_servers_killed_mid_run_loses_nothing(servers, tmp_path, monkeypatch):
    from itc import runner
    from itc.runner import run_experiment

    servers.ensure("a", "b")
    urls = [servers.url("a"), servers.url("b")]
    extra = ["batch_size=2", "concurrency=2", *(f"policy.openai.{k}" for k in FAST_RETRIES)]
    calm = run_experiment(_run_cfg(urls, *extra), tmp_path / "calm")

    appended = runner.ResultsStore.append

    def kill_b_after_the_first(self, record):
        appended(self, record)
        if servers.by_name["b"].proc.poll() is None:
            servers.kill("b")

    monkeypatch.setattr(runner.ResultsStore, "append", kill_b_after_the_first)
    hit = run_experiment(_run_cfg(urls, *extra), tmp_path / "hit")
    assert servers.by_name["b"].proc.poll() is not None
    assert _lines(tmp_path / "calm") == _lines(tmp_path / "hit")
    assert calm["accuracy"] == hit["accuracy"]


def test_the_only_server_killed_ends_the_run_with_the_error_and_a_rerun_resumes(servers, tmp_path, monkeypatch):
    from itc import runner
    from itc.runner import run_experiment

    servers.ensure("a")
    cfg = _run_cfg([servers.url("a")], "batch_size=2", *(f"policy.openai.{k}" for k in FAST_RETRIES))
    appended = runner.ResultsStore.append

    def kill_a_after_two(self, record):
        appended(self, record)
        if len(self.records) == 2:
            servers.kill("a")

    with monkeypatch.context() as m:
        m.setattr(runner.ResultsStore, "append", kill_a_after_two)
        with pytest.raises(BackendError, match="no server answered") as e:
            run_experiment(cfg, tmp_path / "run")
    assert servers.url("a") in str(e.value)
    written = [r[0] for r in _lines(tmp_path / "run")]
    assert len(written) == 2

    # the command line: the same error, exit status 2, nothing written lost
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    cli = subprocess.run(
        [sys.executable, "-m", "itc.cli.run", "policy.backend=openai", f"policy.openai.base_urls=[{servers.url('a')}]",
         "dataset.num_problems=12", "n=4", "batch_size=2", *(f"policy.openai.{k}" for k in FAST_RETRIES),
         f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert cli.returncode == 2, cli.stderr[-2000:]
    assert "itc-run: error: policy 'toy': no server answered" in cli.stderr and servers.url("a") in cli.stderr
    assert [r[0] for r in _lines(tmp_path / "run")] == written

    servers.ensure("a")  # restarted: the rerun resumes
    metrics = run_experiment(cfg, tmp_path / "run")
    ids = [r[0] for r in _lines(tmp_path / "run")]
    assert ids[:2] == written and len(ids) == len(set(ids)) == 12 == metrics["num_problems"]


# --- pieces without servers -------------------------------------------------------------------


def test_itc_serve_turns_the_configs_into_server_flags(toy_policy_path):
    from omegaconf import OmegaConf

    from itc.cli.serve import server_command

    cfg = compose_run(["prm=toy", "policy.vllm.gpu_memory_utilization=0.04"])
    argv, env = server_command("policy", OmegaConf.to_container(cfg.policy, resolve=True), "127.0.0.1", 8123)
    text = " ".join(argv)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert f"--model {toy_policy_path}" in text and "--served-model-name toy" in text and "--port 8123" in text
    assert "--gpu-memory-utilization 0.04" in text and "--block-size 32" in text
    assert "--no-enable-chunked-prefill" in text and "--enable-prompt-tokens-details" in text
    assert "--max-num-seqs" in text  # the in-process engine's batch limits, not the server's smaller ones
    assert env == {"VLLM_USE_AOT_COMPILE": "0"}
    argv, env = server_command("prm", OmegaConf.to_container(cfg.prm, resolve=True), "127.0.0.1", 8124)
    assert argv[argv.index("--runner") + 1] == "pooling"
    assert json.loads(argv[argv.index("--pooler-config") + 1]) == {"task": "token_classify", "pooling_type": "ALL"}
    orm = compose_run(["prm=math-shepherd"])
    with pytest.raises(InputError, match="token-classification"):
        server_command("prm", OmegaConf.to_container(orm.prm, resolve=True), "127.0.0.1", 8125)


def test_batches_in_flight_come_back_in_order_and_a_failure_in_its_turn():
    import time as _time

    from itc.runner import in_order

    def slow_first(k: int) -> int:
        _time.sleep(0.2 if k == 0 else 0)
        return k * 10

    assert list(in_order(slow_first, range(7), 3)) == [0, 10, 20, 30, 40, 50, 60]

    def fails_at_two(k: int) -> int:
        if k == 2:
            raise RuntimeError("two")
        return k

    got = in_order(fails_at_two, range(6), 3)
    assert [next(got), next(got)] == [0, 1]
    with pytest.raises(RuntimeError, match="two"):
        next(got)


def test_requests_go_to_the_least_busy_live_endpoint():
    from itc.serving import EndpointPool, ServingConfig

    pool = EndpointPool("policy 'x'", ServingConfig(base_urls=["http://h:1", "http://h:2/v1", "http://h:3"], backoff_s=5))
    try:
        a, b, c = pool.endpoints
        assert b.url == "http://h:2"
        a.in_flight, b.in_flight, c.in_flight = 3, 1, 2
        assert pool._pick() is b
        b.failed("connection failed")  # out of rotation for a while
        assert pool._pick() is c
        b.succeeded()
        assert pool._pick() is b
    finally:
        pool.close()
    with pytest.raises(InputError, match="twice"):
        EndpointPool("policy 'x'", ServingConfig(base_urls=["http://h:1", "http://h:1/v1"]))
