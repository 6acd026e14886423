"""Particle filtering, DeepConf and adaptive self-consistency: their rules on scripted fakes,
then each through the real vLLM engine on the toy policy (and a PRM trained by itc-train-prm)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fakes import DELIM, LENGTH, StepPolicy, StepPRM, accuracy, problems

from itc.types import Candidate, Completion
from strategies.adaptive_majority import AdaptiveMajority, leader_posterior, settled, vote_counts
from strategies.base import StrategyConfigError
from strategies.deepconf import (
    DeepConf,
    drops_below,
    group_confidences,
    keep_top,
    threshold,
    trace_confidence,
)
from strategies.particle_filtering import ParticleFiltering, resample, resampling_weights
from strategies.steps import Partial

# --- particle filtering ---------------------------------------------------------------------


def test_resampling_weights_are_a_softmax_of_score_over_temperature():
    w = resampling_weights([0.9, 0.5, 0.1], 1.0)
    e = np.exp([0.9, 0.5, 0.1])
    assert np.allclose(w, e / e.sum())
    assert np.allclose(resampling_weights([0.9, 0.5, 0.1], 0.2), np.exp([4.5, 2.5, 0.5]) / np.exp([4.5, 2.5, 0.5]).sum())
    assert resampling_weights([0.9, 0.1], 0.01)[0] > 0.999  # a cold softmax is nearly greedy
    assert np.allclose(resampling_weights([0.9, 0.1], 1e6), [0.5, 0.5])  # a hot one uniform
    assert np.allclose(resampling_weights([1000.0, 999.0], 1.0).sum(), 1.0)  # stable for large scores


def test_finished_particles_are_absorbing_never_drawn_or_copied_into_live_ones():
    done = Partial(0, ["ok 0", "\\boxed{7}"], [0.99, 0.99], finished=True)
    dead = Partial(0, ["ok 0"], [0.99], dead=True)
    good, bad = Partial(0, ["ok 0"], [0.9]), Partial(0, ["bad 0"], [0.1])
    rng = np.random.default_rng(0)
    counts = {"ok 0": 0, "bad 0": 0}
    for _ in range(200):
        nxt = resample([done, good, bad, dead], "min", 0.5, rng)
        assert len(nxt) == 4
        assert nxt[0] is done and nxt[1] is dead  # kept once each, as they are
        live = nxt[2:]
        assert all(p.open and p is not good and p is not bad for p in live)  # fresh copies
        for p in live:
            counts[p.steps[0]] += 1
    # the finished particle scores highest, but only the live ones are drawn, by their weights
    share = counts["ok 0"] / sum(counts.values())
    assert share == pytest.approx(resampling_weights([0.9, 0.1], 0.5)[0], abs=0.05)
    assert resample([done, dead], "min", 1.0, rng) == [done, dead]  # nothing live: nothing drawn


def test_a_copy_is_independent_of_the_particle_it_was_drawn_from():
    (a,) = resample([Partial(0, ["ok 0"], [0.9])], "min", 1.0, np.random.default_rng(0))
    a.steps.append("ok 1")
    a.step_scores.append(0.9)
    (b,) = resample([a], "min", 1.0, np.random.default_rng(0))
    b.steps.append("x")
    assert a.steps == ["ok 0", "ok 1"]


def test_the_reference_takes_part_in_draws_as_its_prefix_and_keeps_its_own_place():
    ref = Partial(0, ["ok 0", "ok 1", "\\boxed{7}"], [0.99, 0.99, 0.99], finished=True)
    bad = Partial(0, ["bad 0"], [0.01])
    rng = np.random.default_rng(1)
    nxt = resample([bad, Partial(0, ["bad 0"], [0.01])], "min", 0.05, rng, reference=ref, depth=1)
    assert len(nxt) == 2  # the reference's place is not in the population
    assert all(p.steps == ["ok 0"] and p.open for p in nxt)  # drawn from the reference's first step
    assert ref.steps == ["ok 0", "ok 1", "\\boxed{7}"] and ref.finished
    # past its end the reference is no longer drawn from
    nxt = resample([bad], "min", 0.05, rng, reference=ref, depth=3)
    assert nxt[0].steps == ["bad 0"]


def test_particle_filtering_batches_every_particle_and_beats_sampling():
    probs = problems(20)
    sampled = ParticleFiltering(n=1).run(probs, StepPolicy(p_bad=0.3, seed=1), StepPRM())
    policy = StepPolicy(p_bad=0.3, seed=1)
    results = ParticleFiltering(n=8, resample_temperature=0.1).run(probs, policy, StepPRM())
    assert accuracy(results) >= 0.9 and accuracy(sampled) < 0.5
    assert policy.calls[0] == (20 * 8, 1, True)  # one call for every particle of every problem
    assert len(policy.calls) == LENGTH + 1
    for r in results:
        assert len(r.candidates) == 8 and all(c.finished for c in r.candidates)
        assert r.selection == "weighted_majority/min" and r.meta["iterations"] == LENGTH + 1


class EarlyFinishPolicy(StepPolicy):
    """StepPolicy whose first step is a final answer with probability 1/2; counts them."""

    def __init__(self, seed=0):
        super().__init__(p_bad=0.0, seed=seed)
        self.early = 0

    def generate(self, prompts, n=1, **kw):
        out = super().generate(prompts, n, **kw)
        for prompt, comps in zip(prompts, out):
            at_root = not [s for s in prompt.split(DELIM)[1:] if s]
            for k in range(len(comps)):
                if at_root and kw.get("one_step") and self.rng.random() < 0.5:
                    comps[k] = Completion("\\boxed{3}", 9, True, "eos")
                    self.early += 1
        return out


class EarlyPRM(StepPRM):
    """An early final answer scores 0.99, above every step on track."""

    @staticmethod
    def on_track(steps):
        return [0.99 if "boxed{3}" in s else 0.5 for s in steps]


def test_particles_that_finish_first_are_kept_once_and_not_duplicated():
    """its_hub #208: drawing every place from every particle copies a finished, high-scoring
    particle into the places of live ones. Here each early answer is one candidate."""
    policy = EarlyFinishPolicy(seed=3)
    (r,) = ParticleFiltering(n=16, resample_temperature=0.05).run(problems(1), policy, EarlyPRM())
    early = [c for c in r.candidates if c.answer == "3"]
    assert 0 < len(early) == policy.early < 16
    assert len(r.candidates) == 16
    assert len(r.candidates) - len(early) == sum(c.answer == "7" for c in r.candidates)


def test_particle_gibbs_rounds_keep_a_reference_and_choose_among_the_last_round():
    policy = StepPolicy(p_bad=0.3, seed=2)
    results = ParticleFiltering(n=8, gibbs_rounds=2).run(problems(3), policy, StepPRM())
    for r in results:
        assert len(r.candidates) == 8 and r.meta["particles"] == 4 and r.meta["rounds"] == 2
        assert r.among == [4, 5, 6, 7]
        assert [c.meta["round"] for c in r.candidates[:4]] == [0] * 4
        ref = r.candidates[7]
        assert ref.meta.get("reference") and ref.meta["round"] == 0
        assert any(c.steps == ref.steps for c in r.candidates[:4])  # drawn from the first round
        assert not any(c.meta.get("reference") for c in r.candidates[:7])
        assert r.chosen_index in r.among
    # the second round generates for 3 free particles per problem beside the reference
    assert policy.calls[0] == (3 * 4, 1, True) and policy.calls[LENGTH + 1] == (3 * 3, 1, True)
    from strategies.base import StrategyConfigError

    with pytest.raises(StrategyConfigError, match="gibbs"):
        ParticleFiltering(n=2, gibbs_rounds=2)
    with pytest.raises(StrategyConfigError, match="resample_temperature"):
        ParticleFiltering(n=2, resample_temperature=0)


# --- DeepConf -------------------------------------------------------------------------------


def test_group_confidence_is_a_sliding_window_mean_and_a_trace_its_lowest():
    confs = [3, 3, 1, 1, 3]
    assert np.allclose(group_confidences(confs, 2), [3, 2, 1, 2])
    assert trace_confidence(confs, 2) == 1.0
    assert trace_confidence(confs, 5) == pytest.approx(2.2)
    assert trace_confidence(confs, 6) == pytest.approx(2.2)  # shorter than a window: its mean
    assert len(group_confidences(confs, 6)) == 0
    # stopping looks only at windows that end in the new tokens
    assert drops_below(confs, 2, 1.5, since=0)
    assert not drops_below(confs, 2, 1.5, since=4)  # the one window ending at token 4: (1+3)/2
    assert not drops_below([1, 1], 3, 5.0)  # no full window yet: never stopped


def test_keep_top_eta_percent_and_the_threshold_it_implies():
    confs = [float(c) for c in range(1, 11)]
    assert keep_top(confs, 10) == [9]
    assert keep_top(confs, 90) == list(range(1, 10))
    assert threshold(confs, 90) == pytest.approx(1.9)
    assert keep_top([], 10) == [] and keep_top([2.0], 10) == [0]


class ConfPolicy(StepPolicy):
    """StepPolicy reporting token confidences: 5 on the tokens of an "ok" step and of the
    answer, 1 on a "bad" step's (one token per character; a delimiter as the step before it)."""

    class tokenizer:
        def __new__(cls, texts, add_special_tokens=False):
            return {"input_ids": [[0] * len(t) for t in texts]}

    supports_stop_rule = True

    def __init__(self, p_bad=0.3, seed=0):
        super().__init__(p_bad, seed)
        self.logprobs = []

    def generate(self, prompts, n=1, *, logprobs=None, stop_when=None, **kw):
        self.logprobs.append(logprobs)
        out = super().generate(prompts, n, **kw)
        for k, comps in enumerate(out):
            for j, c in enumerate(comps):
                confs = []
                steps = c.text.split(DELIM)
                for k, step in enumerate(steps):
                    x = 1.0 if step.startswith("bad") else 5.0
                    confs += [x] * (len(step) + (len(DELIM) if k < len(steps) - 1 else 0))
                c.token_confidence = confs
                assert len(c.token_confidence) == c.num_tokens
                # the stop rule sees every token as it comes, as a streaming engine would
                for t in range(len(confs)) if stop_when else ():
                    if stop_when(k, confs[: t + 1], t):
                        comps[j] = Completion(c.text[: t + 1], t + 1, False, "stopped", token_confidence=confs[: t + 1])
                        break
        return out


class Scripted(ConfPolicy):
    """Three wrong answers written with low confidence, two right ones with high."""

    def generate(self, prompts, n=1, *, logprobs=None, **kw):
        texts = [("\\boxed{3}", 1.0)] * 3 + [("\\boxed{7}", 5.0)] * 2
        return [[Completion(t, len(t), True, "eos", token_confidence=[x] * len(t)) for t, x in texts[:n]] for _ in prompts]


def test_deepconf_offline_keeps_the_most_confident_and_votes_by_confidence():
    from strategies.majority import MajorityVote

    (plain,) = MajorityVote(n=5).run(problems(1), Scripted())
    assert plain.chosen_answer == "3"
    (r,) = DeepConf(n=5, eta=40, window=4).run(problems(1), Scripted())
    assert r.chosen_answer == "7" and r.selection == "confidence_weighted"
    assert r.among == [3, 4]
    assert [c.meta["confidence"] for c in r.candidates] == [1.0] * 3 + [5.0] * 2
    assert r.candidates[0].meta["step_confidence"] == [1.0]
    # eta=100 keeps every trace: 3 x 1.0 against 2 x 5.0, still 7
    (r,) = DeepConf(n=5, eta=100, window=4).run(problems(1), Scripted())
    assert r.among == [0, 1, 2, 3, 4] and r.chosen_answer == "7"


def test_deepconf_asks_the_policy_for_logprobs_and_records_confidence_per_step():
    policy = ConfPolicy(p_bad=0.5, seed=1)
    results = DeepConf(n=4, eta=90, window=3, top_logprobs=7).run(problems(2), policy, None)
    assert policy.logprobs == [7]
    for r in results:
        for c in r.candidates:
            assert len(c.meta["step_confidence"]) == len(c.steps)
            assert c.meta["step_confidence"] == [1.0 if s.startswith("bad") else 5.0 for s in c.steps]
            assert c.meta["confidence"] == (1.0 if any(s.startswith("bad") for s in c.steps) else 5.0)


def test_deepconf_online_stops_traces_inside_the_generation_below_the_warmup_threshold():
    probs = problems(10)
    online_policy = ConfPolicy(p_bad=0.15, seed=4)
    online = DeepConf(n=16, mode="online", warmup=8, eta=10, window=3).run(probs, online_policy, None)
    offline = DeepConf(n=16, eta=10, window=3).run(probs, ConfPolicy(p_bad=0.15, seed=4), None)
    stopped = 0
    for r in online:
        assert len(r.candidates) == 16 and r.meta["warmup"] == 8
        assert r.meta["threshold"] == 5.0  # over 10 % of the warm-up traces have no bad step
        for k, c in enumerate(r.candidates):
            if c.meta.get("warmup"):
                continue
            if c.meta["stopped"]:
                # cut at the first full window (of 3 tokens) with a bad token in it
                assert c.text.endswith("\n\nb") or c.text == "bad"
                assert c.answer is None and not c.finished and k not in r.among
            else:
                assert not any(s.startswith("bad") for s in c.steps) and c.answer == "7"
        stopped += r.meta["stopped"]
        assert r.meta["stopped_tokens"] < r.meta["stopped"] * len("ok 0\n\n") * LENGTH
        assert r.chosen_answer == "7" and all(r.candidates[k].answer == "7" for k in r.among)
    assert stopped > 0
    assert sum(r.completion_tokens for r in online) < sum(r.completion_tokens for r in offline)
    assert accuracy(online) == accuracy(offline) == 1.0
    # the warm-up, then every other trace of every problem in one streamed call
    assert online_policy.calls == [(10, 8, False), (10, 8, False)]
    with pytest.raises(StrategyConfigError, match="vllm"):
        DeepConf(n=4, mode="online").run(problems(1), StepPolicy(), None)


def test_deepconf_checks_its_settings():
    from strategies.base import StrategyConfigError

    for bad in ({"mode": "fast"}, {"eta": 0}, {"eta": 101}, {"window": 0}, {"top_logprobs": 21}):
        with pytest.raises(StrategyConfigError, match="deepconf"):
            DeepConf(n=4, **bad)


# --- adaptive self-consistency ----------------------------------------------------------------


def test_the_beta_stopping_rule():
    assert leader_posterior([4]) == pytest.approx(1 - 0.5**5)
    assert leader_posterior([3]) == pytest.approx(1 - 0.5**4)
    assert settled([4], "beta", 0.95) and not settled([3], "beta", 0.95)
    # against a runner-up: P(p > 1/2) for p ~ Beta(a + 1, b + 1)
    assert leader_posterior([6, 2, 1]) == pytest.approx(466 / 512)  # Beta(7, 3)'s mass above 1/2
    assert not settled([6, 2, 1], "beta", 0.95) and settled([9, 1], "beta", 0.95)
    assert not settled([], "beta", 0.95) and leader_posterior([]) == 0.0
    assert settled([4, 1], "agreement", 0.8) and not settled([3, 1], "agreement", 0.8)
    assert not settled([1], "agreement", 0.8, min_votes=2)


def test_votes_group_equivalent_answers_and_ignore_unanswered_samples():
    cands = [Candidate("", [], a, 1) for a in ("0.5", "\\frac{1}{2}", "3", None, "1/2")]
    assert vote_counts(cands) == [3, 1]


class Mixed(StepPolicy):
    """Problem 0 is easy (always \\boxed{7}); the others answer at random among five values."""

    def __init__(self, seed=0):
        super().__init__(seed=seed)
        self.keys = []

    def generate(self, prompts, n=1, *, request_keys=None, **kw):
        self.calls.append((len(prompts), n, False))
        self.keys.append(list(request_keys))
        return [
            [Completion(t, len(t), True, "eos") for t in
             (["\\boxed{7}"] * n if p.startswith("problem 0") else [f"\\boxed{{{self.rng.randint(1, 5)}}}" for _ in range(n)])]
            for p in prompts
        ]


def test_adaptive_majority_stops_settled_problems_and_records_samples_used():
    policy = Mixed(seed=1)
    results = AdaptiveMajority(n=16, round_size=4).run(problems(3), policy, None)
    easy, hard = results[0], results[1:]
    assert easy.meta == {"samples": 4, "rounds": 1, "settled": True} and easy.chosen_answer == "7"
    assert all(r.meta["samples"] == 16 and r.meta["rounds"] == 4 and not r.meta["settled"] for r in hard)
    assert [len(c.candidates) for c in results] == [4, 16, 16]
    assert easy.completion_tokens == 4 * len("\\boxed{7}")
    assert policy.calls[0] == (3, 4, False) and policy.calls[1] == (2, 4, False)  # only the open ones
    assert policy.keys[0] == ["p0/round0", "p1/round0", "p2/round0"] and policy.keys[1] == ["p1/round1", "p2/round1"]
    # the last round of a problem may be smaller: N=6 in rounds of 4
    short = AdaptiveMajority(n=6, round_size=4).run(problems(2)[1:], Mixed(seed=1), None)
    assert short[0].meta["samples"] == 6


def test_adaptive_majority_agreement_rule():
    (r,) = AdaptiveMajority(n=16, round_size=2, stop="agreement", threshold=1.0, min_votes=2).run(problems(1), Mixed(), None)
    assert r.meta["samples"] == 2
    from strategies.base import StrategyConfigError

    with pytest.raises(StrategyConfigError, match="stop"):
        AdaptiveMajority(stop="sometimes")


# --- through the real components --------------------------------------------------------------

RUNS = {
    "particle_filtering": ["strategy=particle_filtering"],
    "particle_gibbs": ["strategy=particle_filtering", "strategy.gibbs_rounds=2"],
    "deepconf_offline": ["strategy=deepconf", "strategy.window=8", "strategy.eta=90"],
    "deepconf_online": ["strategy=deepconf", "strategy.mode=online", "strategy.warmup=2", "strategy.window=8"],
    "adaptive_majority": ["strategy=adaptive_majority", "strategy.round_size=2"],
}


@pytest.mark.vllm
@pytest.mark.parametrize("run", list(RUNS))
def test_each_new_strategy_through_itc_runs_loop_on_vllm(run, tmp_path, vllm_policy, vllm_prm, trained_prm):
    from conftest import VLLM_TEST_OVERRIDES, compose_run

    from itc.config_schema import validate_run_config
    from itc.runner import run_experiment

    model = f"prm.model={trained_prm[0]}/checkpoint"
    cfg = compose_run(VLLM_TEST_OVERRIDES + RUNS[run] + ["n=4", "prm=toy", model, "dataset.num_problems=3"])
    validate_run_config(cfg)
    metrics = run_experiment(cfg, tmp_path, policy=vllm_policy, prm=vllm_prm)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 and metrics["num_problems"] == 3
    for r in records:
        assert r["completion_tokens"] > 0 and r["prompt_tokens_computed"] > 0 and r["candidates"]
        cands = r["candidates"]
        if run.startswith("particle"):
            assert r["prm_tokens"] > 0 and len(cands) == 4
            assert all(len(c["step_scores"]) == len(c["steps"]) for c in cands)
        if run.startswith("deepconf"):
            assert r["selection"] == "confidence_weighted" and r["prm_tokens"] == 0 and len(cands) == 4
            for c in cands:
                assert c["meta"]["confidence"] > 0 and len(c["meta"]["step_confidence"]) == len(c["steps"])
            assert r["among"] is not None and set(r["among"]) <= set(range(4))
        if run == "deepconf_online":
            assert r["meta"]["warmup"] == 2 and r["meta"]["threshold"] > 0
            assert sum(bool(c["meta"].get("warmup")) for c in cands) == 2
        if run == "adaptive_majority":
            assert 2 <= r["meta"]["samples"] == len(cands) <= 4
        if r["chosen_index"] is not None:
            assert cands[r["chosen_index"]]["answer"] == r["chosen_answer"]
    assert math.isfinite(metrics["accuracy"])


# --- the sweep report ---------------------------------------------------------------------------


def _run(folder, strategy, n, correct, tokens, meta=None):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"strategy": strategy, "n": n, "policy": "toy", "dataset": "toy"}))
    (folder / "run_config.json").write_text(json.dumps({"strategy": {"name": strategy, "n": n}}))
    lines = [
        {"problem_id": f"p{k}", "correct": c, "prompt_tokens_computed": 10, "completion_tokens": t,
         "prm_tokens_computed": 0, "candidates": [], "meta": meta or {}}
        for k, (c, t) in enumerate(zip(correct, tokens))
    ]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_sweep_report_gives_each_run_a_seeded_bootstrap_interval(tmp_path, capsys, monkeypatch):
    from evals.sweep_report import main, report

    _run(tmp_path / "a", "majority", 4, [True, False, True, True], [90, 100, 110, 100])
    _run(tmp_path / "b", "adaptive_majority", 16, [True] * 4, [40, 40, 200, 40], {"samples": 4})
    rows = report([str(tmp_path)], seed=0, resamples=500)
    assert [(r["strategy"], r["n"]) for r in rows] == [("adaptive_majority", 16), ("majority", 4)]
    maj = rows[1]
    assert maj["accuracy"] == 0.75 and maj["policy_tokens"] == 110 and maj["samples_used"] is None
    lo, hi = json.loads(maj["accuracy_95ci"])
    assert 0.0 <= lo < 0.75 < hi <= 1.0
    assert rows[0]["accuracy_95ci"] == "[1.000, 1.000]" and rows[0]["samples_used"] == 4
    assert report([str(tmp_path)], seed=0, resamples=500) == rows  # seeded: the same again
    monkeypatch.setenv("ITC_RESULTS_LOG", str(tmp_path / "log"))
    main([str(tmp_path), "--resamples", "200", "--log", "test sweep"])
    assert "| adaptive_majority | 16 |" in capsys.readouterr().out
    (entry,) = (tmp_path / "log").iterdir()
    assert "percentile bootstrap" in entry.read_text()
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "missing")])
    assert e.value.code == 2 and "error:" in capsys.readouterr().err
