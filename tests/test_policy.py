"""Policy backends through the real engines: vLLM (one per session) and transformers."""

import re

import pytest

from itc.policy import PromptTooLongError
from itc.toy import generate

pytestmark = pytest.mark.vllm


def _prompts(policy, k=4, levels=(1, 2, 3, 4, 5)):
    return [policy.format_prompt(p.text) for p in generate(k, seed=5, levels=levels)]


def test_prompt_format_comes_from_config(vllm_policy):
    prompt = vllm_policy.format_prompt("Start at 1 and do A+2.", ["A+2 1+2=3"])
    assert prompt == "<|user|>Start at 1 and do A+2.<|assistant|>A+2 1+2=3\n\n"


def test_vllm_samples_n_solutions_with_token_counts(vllm_policy):
    prompts = _prompts(vllm_policy)
    outs = vllm_policy.generate(prompts, n=3)
    assert len(outs) == 4 and all(len(o) == 3 for o in outs)
    tok = vllm_policy.tokenizer
    for completions in outs:
        for c in completions:
            assert c.finish_reason in ("eos", "length")
            # the count includes the EOS token, which the text leaves out
            extra = 1 if c.finish_reason == "eos" else 0
            assert c.num_tokens == len(tok(c.text, add_special_tokens=False)["input_ids"]) + extra
    finished = [c for o in outs for c in o if c.finished]
    assert finished and all("\\boxed{" in c.text for c in finished[:3])


def test_vllm_one_step_stops_at_delimiter(vllm_policy):
    outs = vllm_policy.generate(_prompts(vllm_policy, levels=(4,)), n=2, one_step=True)
    for completions in outs:
        for c in completions:
            assert "\n\n" not in c.text
            assert c.finish_reason == "step" and not c.finished
            assert re.match(r"[A-Za-z]+[+\-*]\d+ \d+[+\-*]\d+=\d+$", c.text)  # one operation done


def test_vllm_stops_on_the_delimiter_token_as_it_would_on_the_string(vllm_policy, monkeypatch):
    """The toy delimiter "\n\n" is one token that no other token contains, so generation
    stops on that token without detokenizing, and the texts decoded afterwards are those
    the stop-string path gives. A delimiter inside another token ("\n" in "\n\n") falls
    back to the string."""
    tok = vllm_policy.tokenizer
    assert vllm_policy._delimiter_token == tok.convert_tokens_to_ids("ĊĊ")
    prompts = _prompts(vllm_policy, k=6)
    prompts += [p + s.text + "\n\n" for p, (s,) in zip(prompts, vllm_policy.generate(prompts, temperature=0.0, one_step=True))]
    by_token = vllm_policy.generate(prompts, temperature=0.0, one_step=True)
    monkeypatch.setitem(vllm_policy.__dict__, "_delimiter_token", None)
    by_string = vllm_policy.generate(prompts, temperature=0.0, one_step=True)
    assert by_token == by_string
    assert {c.finish_reason for (c,) in by_token} == {"step"} and all(c.text for (c,) in by_token)
    monkeypatch.delitem(vllm_policy.__dict__, "_delimiter_token")
    monkeypatch.setattr(vllm_policy.prompt_config, "step_delimiter", "\n")
    assert vllm_policy._delimiter_token is None


def test_vllm_greedy_is_deterministic(vllm_policy):
    prompts = _prompts(vllm_policy)
    a = vllm_policy.generate(prompts, n=1, temperature=0.0)
    b = vllm_policy.generate(prompts, n=1, temperature=0.0)
    assert [o[0].text for o in a] == [o[0].text for o in b]


def _texts(outputs):
    return [[c.text for c in completions] for completions in outputs]


def test_vllm_request_keys_give_each_request_its_samples_whatever_the_batch(vllm_policy, monkeypatch):
    """A keyed request samples under its own seed (the run's seed and its key), so its
    completions are the same alone, in a batch, in another order or after other calls."""
    prompts = _prompts(vllm_policy, k=6)
    keys = [f"problem-{i}" for i in range(6)]

    def sample(prompts, keys):  # hot, so that samples differ (a repeat is no accident)
        return _texts(vllm_policy.generate(prompts, n=4, temperature=1.5, request_keys=keys))

    together = sample(prompts, keys)
    alone = [sample([p], [k])[0] for p, k in zip(prompts[:2], keys[:2])]
    reordered = sample(prompts[::-1], keys[::-1])[::-1]
    # mixed into a batch with other requests (and a repeated prompt under another key)
    mixed = sample(prompts[3:] + prompts[:1] + prompts, ["a", "b", "c", "d"] + keys)
    assert together[:2] == alone
    assert together == reordered == mixed[4:]
    assert any(len(set(t)) > 1 for t in together)  # the n samples of a request differ
    assert sample(prompts, [k + "x" for k in keys]) != together
    monkeypatch.setattr(vllm_policy, "seed", vllm_policy.seed + 1)  # another run's seed
    assert sample(prompts, keys) != together
    with pytest.raises(ValueError, match="1 request keys for 6 prompts"):
        vllm_policy.generate(prompts, n=1, request_keys=["one"])


def test_hf_request_keys_give_each_request_its_samples_whatever_the_batch(hf_policy):
    prompts = _prompts(hf_policy, k=4, levels=(5,))
    keys = [f"problem-{i}" for i in range(4)]
    hot = 1.5  # so that samples differ (a repeat is no accident)
    together = _texts(hf_policy.generate(prompts, n=3, temperature=hot, request_keys=keys))
    alone = _texts(hf_policy.generate(prompts[2:3], n=3, temperature=hot, request_keys=keys[2:3]))
    reordered = _texts(hf_policy.generate(prompts[::-1], n=3, temperature=hot, request_keys=keys[::-1]))[::-1]
    assert together[2:3] == alone and together == reordered
    assert any(len(set(t)) > 1 for t in together)
    assert _texts(hf_policy.generate(prompts, n=3, temperature=hot, request_keys=[k + "x" for k in keys])) != together


def test_request_seed_is_stable_and_spreads():
    from itc.policy.base import request_seed

    # fixed by sha256, the same in every process (Python's hash() is salted per process)
    assert request_seed(0, "toy-abc") == request_seed(0, "toy-abc")
    assert request_seed(0, "toy-abc") == 0x6a55bdf3118a8e19
    seeds = {request_seed(s, f"toy-{i}") for s in range(3) for i in range(100)}
    assert len(seeds) == 300 and all(0 <= x < 2**63 for x in seeds)


def test_prompt_longer_than_context_is_a_clear_error(vllm_policy):
    with pytest.raises(PromptTooLongError, match="max_model_len"):
        vllm_policy.generate([vllm_policy.format_prompt("9" * 5000)], n=1)


def test_hf_backend_same_interface_and_agrees_with_vllm_at_temperature_zero(vllm_policy, hf_policy):
    prompts = _prompts(vllm_policy, k=10)
    v = vllm_policy.generate(prompts, n=1, temperature=0.0)
    h = hf_policy.generate(prompts, n=1, temperature=0.0)
    same = sum(a[0].text == b[0].text for a, b in zip(v, h))
    assert same >= 8, [(a[0].text, b[0].text) for a, b in zip(v, h)]
    steps = hf_policy.generate(prompts[:3], n=2, one_step=True)
    for completions in steps:
        for c in completions:
            assert "\n\n" not in c.text and c.finish_reason == "step"
    sampled = hf_policy.generate(prompts[:2], n=3)
    assert all(len(o) == 3 for o in sampled)


def test_token_confidence_from_top_logprobs_agrees_between_backends(vllm_policy, hf_policy):
    """``logprobs=k``: each token's confidence is minus the mean of its top-k log-probabilities,
    one per generated token (the delimiter a step stops on included), the same on vLLM and
    transformers; without ``logprobs`` there are none."""
    import math

    prompts = _prompts(vllm_policy, k=4)
    assert all(c.token_confidence is None for cs in vllm_policy.generate(prompts[:1]) for c in cs)
    whole = None
    for one_step in (False, True):
        v = vllm_policy.generate(prompts, temperature=0.0, logprobs=5, one_step=one_step)
        h = hf_policy.generate(prompts, temperature=0.0, logprobs=5, one_step=one_step)
        for (a,), (b,) in zip(v, h):
            assert len(a.token_confidence) == a.num_tokens and all(x >= 0 for x in a.token_confidence)
            if a.text == b.text:
                assert len(b.token_confidence) == b.num_tokens == a.num_tokens
                assert all(math.isclose(x, y, abs_tol=2e-2) for x, y in zip(a.token_confidence, b.token_confidence))
        whole = whole or v
    # the mean over the top 20 reaches further into the tail than over the top 5: higher
    ((wide,),) = vllm_policy.generate(prompts[:1], temperature=0.0, logprobs=20)
    assert wide.text == whole[0][0].text
    assert all(w > x for w, x in zip(wide.token_confidence, whole[0][0].token_confidence))
    with pytest.raises(ValueError, match="logprobs"):
        vllm_policy.generate(prompts[:1], logprobs=0)


def test_vllm_stops_a_sample_inside_the_generation_by_the_callers_rule(vllm_policy, hf_policy):
    """``stop_when``: samples are streamed from the engine and a sample is aborted at the
    token where the rule holds; the others run as without a rule."""
    prompts = _prompts(vllm_policy, k=3)
    seen = []

    def stop(k, confs, before):
        seen.append((k, len(confs), before))
        return k == 1 and len(confs) >= 5

    plain = vllm_policy.generate(prompts, n=2, temperature=0.0, logprobs=3)
    cut = vllm_policy.generate(prompts, n=2, temperature=0.0, logprobs=3, stop_when=stop)
    for k, (a, b) in enumerate(zip(plain, cut)):
        for x, y in zip(a, b):
            assert y.prompt_tokens_computed is not None and len(y.token_confidence) == y.num_tokens
            if k == 1:
                assert (y.num_tokens, y.finish_reason, y.finished) == (5, "stopped", False)
                assert x.text.startswith(y.text) and y.token_confidence == pytest.approx(x.token_confidence[:5], abs=1e-4)
            else:
                assert (y.text, y.num_tokens, y.finish_reason) == (x.text, x.num_tokens, x.finish_reason)
    assert {k for k, _, _ in seen} == {0, 1, 2}
    assert all(before < size for _, size, before in seen)  # each call shows new tokens
    with pytest.raises(ValueError, match="logprobs"):
        vllm_policy.generate(prompts[:1], stop_when=stop)
    with pytest.raises(ValueError, match="vllm backend"):
        hf_policy.generate(prompts[:1], logprobs=3, stop_when=stop)


def test_toy_policy_engine_settings_reach_vllm(vllm_policy):
    """configs/policy/toy.yaml's engine_kwargs reach vLLM: prefix caching reuses whole blocks,
    and the CPU default (128 tokens) is longer than most toy prompts."""
    config = vllm_policy.llm.llm_engine.vllm_config
    assert config.cache_config.enable_prefix_caching
    assert config.cache_config.block_size == 32


def test_engine_env_is_set_while_the_engine_starts_and_restored_after(monkeypatch):
    """``vllm.env`` (configs/prm/toy.yaml gives the PRM's engine every CPU core) reaches the
    engine's processes, which read it as they start, and leaves the caller's environment."""
    import os

    import vllm

    from itc.policy import vllm_backend

    seen = []

    class FakeLLM:
        def __init__(self, **kwargs):
            seen.append((kwargs, os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU"), os.environ.get("ITC_TEST_UNSET")))

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.setattr(vllm_backend, "_ENGINES", {})
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "1")
    monkeypatch.delenv("ITC_TEST_UNSET", raising=False)
    a = vllm_backend.get_engine(env={"VLLM_CPU_NUM_OF_RESERVED_CPU": 0, "ITC_TEST_UNSET": "x"}, model="m")
    assert seen == [({"model": "m"}, "0", "x")]
    assert os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1" and "ITC_TEST_UNSET" not in os.environ
    # the environment is part of the engine's identity: same settings, same engine
    assert vllm_backend.get_engine(env={"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "ITC_TEST_UNSET": "x"}, model="m") is a
    assert vllm_backend.get_engine(model="m") is not a
    assert seen[-1] == ({"model": "m"}, "1", None)
    with pytest.raises(ValueError, match="vllm.env must map"):
        vllm_backend.get_engine(env=["VLLM_USE_AOT_COMPILE=0"], model="m")


def _engine_process_env(llm) -> dict[str, str]:
    """The environment of a running engine's core process (Linux /proc)."""
    from pathlib import Path

    (proc,) = llm.llm_engine.engine_core.resources.engine_manager.processes
    raw = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_the_real_engines_start_with_their_configured_env(vllm_policy, vllm_prm):
    """configs/policy/toy.yaml and configs/prm/toy.yaml set vllm.env; vLLM's own processes
    get it (they read these settings there), while this process keeps its environment."""
    import os

    assert _engine_process_env(vllm_policy.llm).get("VLLM_USE_AOT_COMPILE") == "0"
    assert _engine_process_env(vllm_prm.llm).get("VLLM_CPU_NUM_OF_RESERVED_CPU") == "0"
    assert "VLLM_USE_AOT_COMPILE" not in os.environ
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in os.environ
