"""Search strategies: selection and search logic on small fakes, then each strategy through
the real vLLM engine with the toy policy and a PRM trained by itc-train-prm."""

from __future__ import annotations

import pytest

from fakes import LENGTH, StepPolicy, StepPRM, accuracy, cand, problems
from itc.types import Candidate, Completion
from strategies.beam_search import BeamSearch
from strategies.best_of_n import BestOfN
from strategies.dvts import DVTS
from strategies.lookahead import Lookahead
from strategies.mcts import MCTS
from strategies.selection import select
from strategies.self_reflection import SelfReflection, doubt
from strategies.steps import Partial

# --- selection ------------------------------------------------------------------------------


def test_selection_highest_weighted_and_plain_majority():
    cands = [cand("1", [0.9, 0.2]), cand("2", [0.6]), cand("2", [0.5]), cand("1", [0.3])]
    assert select(cands, "highest", "last") == 1  # 0.2, 0.6, 0.5, 0.3 under "last"
    assert select(cands, "highest", "mean") == 1
    assert select(cands, "weighted_majority", "min") == 1  # "2": 1.1 against "1": 0.5
    assert select(cands, "majority", "min") == 0  # tie, the class seen first


def test_unanswered_candidates_are_never_chosen_and_unfinished_ones_count_by_their_answer():
    cands = [cand("1", [0.99], finished=False), cand(None, [0.98]), cand("3", [0.1])]
    assert select(cands, "highest", "min") == 0  # cut off at the token limit, answered: it counts
    assert select(cands[1:2], "highest", "min") is None
    with pytest.raises(ValueError, match="aggregation 'median'"):
        select(cands, "highest", "median")


def test_one_rule_for_unfinished_samples_in_majority_vote_select_and_subsample():
    from evals.subsample import subsample_record
    from strategies.majority import MajorityVote

    class Cut(StepPolicy):
        """Two of three samples are cut at the token limit after writing \\boxed{2}."""

        def generate(self, prompts, n=1, **kw):
            outs = [Completion("\\boxed{1}", 3, True, "eos"), Completion("\\boxed{2} and", 3, False, "length"),
                    Completion("\\boxed{2} and", 3, False, "length")]
            return [outs[:n] for _ in prompts]

    (r,) = MajorityVote(n=3).run(problems(1), Cut())
    assert r.chosen_answer == "2"
    assert r.candidates[select(r.candidates, "majority")].answer == "2"
    record = {"candidates": [c.to_dict() for c in r.candidates], "correct": True}
    assert subsample_record(record, 3, "majority")["chosen_answer"] == "2"


def test_prm_strategies_say_how_to_configure_a_prm():
    with pytest.raises(ValueError, match="prm=toy"):
        BestOfN(n=2).run(problems(1), StepPolicy())


# --- search logic ---------------------------------------------------------------------------


def test_best_of_n_scores_all_samples_in_one_call_and_counts_compute():
    policy, prm = StepPolicy(), StepPRM()
    results = BestOfN(n=8, selection="highest").run(problems(), policy, prm)
    assert policy.calls == [(3, 8, False)] and prm.calls == 1
    r = results[0]
    assert len(r.candidates) == 8 and all(c.step_scores for c in r.candidates)
    assert r.prm_tokens == sum(len(c.steps) for c in r.candidates)
    assert r.completion_tokens == sum(c.completion_tokens for c in r.candidates)
    assert r.prompt_tokens == 8 * len("problem 0\n\n")  # sent once per sample's request


def test_beam_search_beats_sampling_and_counts_pruned_tokens():
    probs = problems(20)
    sampled = BestOfN(n=1).run(probs, StepPolicy(p_bad=0.3, seed=1), StepPRM())
    policy = StepPolicy(p_bad=0.3, seed=1)
    beams = BeamSearch(n=8, beam_width=2).run(probs, policy, StepPRM())
    assert accuracy(beams) >= 0.9 > 0.5 > accuracy(sampled)
    # one batched call per iteration for all problems: the first samples N, then M per kept beam
    assert policy.calls[0] == (20, 8, True) and policy.calls[1] == (20 * 4, 2, True)
    r = beams[0]
    assert all(c.finished for c in r.candidates) and len(r.candidates) == 8  # at most N
    assert r.completion_tokens > sum(c.completion_tokens for c in r.candidates)  # pruned beams count


def test_beam_search_generates_open_beams_to_the_end_at_its_last_iteration():
    policy = StepPolicy()
    (r,) = BeamSearch(n=4, beam_width=2, max_steps=2).run(problems(1), policy, StepPRM())
    assert policy.calls == [(1, 4, True), (2, 2, False)]  # the last iteration: whole solutions
    assert len(r.candidates) == 4 and all(c.finished and c.answer for c in r.candidates)
    assert r.chosen_answer is not None and r.meta["iterations"] == 2


class LengthCutPolicy(StepPolicy):
    """StepPolicy whose first step of every "bad" sample runs into the token limit."""

    def generate(self, prompts, n=1, **kw):
        out = super().generate(prompts, n, **kw)
        return [[Completion(c.text, c.num_tokens, False, "length") if c.text.startswith("bad 0") else c
                 for c in comps] for comps in out]


def test_beam_search_keeps_a_beam_cut_at_the_token_limit_as_a_candidate():
    (r,) = BeamSearch(n=8, beam_width=4).run(problems(1), LengthCutPolicy(p_bad=0.5, seed=1), StepPRM())
    cut = [c for c in r.candidates if c.steps == ["bad 0"]]
    assert cut and not any(c.finished for c in cut) and all(c.answer is None for c in cut)
    assert len(r.candidates) == 8  # the cut beams count towards N


def test_dvts_returns_the_m_children_of_each_subtrees_last_expansion():
    results = DVTS(n=8, beam_width=4).run(problems(5), StepPolicy(seed=2), StepPRM())
    assert accuracy(results) == 1.0
    r = results[0]
    assert len(r.candidates) == 8  # N/M subtrees times M
    tree = r.meta["tree"]
    assert len(tree) == 2 * 4 * (LENGTH + 1)  # M children per subtree per step
    kept = [n for n in tree if n["kept"]]
    assert len(kept) == 2 * (LENGTH + 1)
    assert all(n["parent"] is None or tree[n["parent"]]["kept"] for n in tree)
    last = [n["id"] for n in tree if n["depth"] == LENGTH]  # the last expansions, in order
    assert [c.meta["node"] for c in r.candidates] == last
    assert [c.meta["subtree"] for c in r.candidates] == [0] * 4 + [1] * 4
    for n in (4, 16):
        assert all(len(x.candidates) == n for x in DVTS(n=n, beam_width=4).run(problems(2), StepPolicy(), StepPRM()))


def test_dvts_generates_open_subtrees_to_the_end_at_its_last_iteration():
    policy = StepPolicy()
    (short,) = DVTS(n=4, beam_width=2, max_steps=3).run(problems(1), policy, StepPRM())
    assert [one_step for _, _, one_step in policy.calls] == [True, True, False]
    assert len(short.candidates) == 4 and all(c.finished and c.answer for c in short.candidates)
    assert short.chosen_answer is not None


def test_lookahead_ranks_by_rollouts_and_counts_their_tokens():
    probs = problems(10)
    plain = BeamSearch(n=4, beam_width=2).run(probs, StepPolicy(p_bad=0.3, seed=3), StepPRM())
    policy = StepPolicy(p_bad=0.3, seed=3)
    ahead = Lookahead(n=4, beam_width=2, lookahead=2).run(probs, policy, StepPRM())
    assert accuracy(ahead) >= 0.7
    from strategies.accounting import Meter

    beam, meter = Partial(0, ["ok 0"], [0.9]), Meter(1)
    Lookahead(n=2, lookahead=2).rank(meter, StepPolicy(p_bad=1.0), StepPRM(), problems(1), [beam])
    # rolled out at temperature 0 (the fake is then never "bad"), scored, and counted
    assert beam.meta == {"rank": 0.9, "lookahead_steps": 2}
    assert meter.usage[0].completion_tokens == len("ok 1") + len("ok 2")
    assert meter.usage[0].prm_tokens == 3
    assert sum(r.completion_tokens for r in ahead) > sum(r.completion_tokens for r in plain)
    assert sum(r.prm_tokens for r in ahead) > sum(r.prm_tokens for r in plain)


def test_self_reflection_backtracks_from_the_doubted_step_and_keeps_every_round():
    p = Partial(0, ["ok 0", "bad 1", "ok 2"], [0.9, 0.1, 0.9], finished=True)
    assert doubt(p, 0.5) == (1, "the verifier scores it 0.10")
    assert doubt(Partial(0, ["A+1 2+1=4"], [0.9], finished=True), 0.5) == (0, "an equation in it is false")
    assert doubt(Partial(0, ["ok 0"], [0.9], finished=True), 0.5)[1].startswith("no final answer")
    assert doubt(Partial(0, ["ok 0", "\\boxed{7}"], [0.9, 0.9], finished=True), 0.5) is None

    results = SelfReflection(n=4, rounds=3).run(problems(10), StepPolicy(p_bad=0.3, seed=4), StepPRM())
    one_shot = BestOfN(n=4, selection="weighted_majority").run(problems(10), StepPolicy(p_bad=0.3, seed=4), StepPRM())
    assert accuracy(results) >= accuracy(one_shot)
    for r in results:
        rounds = {}
        for c in r.candidates:
            rounds.setdefault(c.meta["chain"], []).append(c)
        assert sorted(rounds) == [0, 1, 2, 3]
        for chain in rounds.values():
            assert [c.meta["round"] for c in chain] == list(range(len(chain)))
            assert [c.meta["final"] for c in chain] == [False] * (len(chain) - 1) + [True]
            for before, after in zip(chain, chain[1:]):  # resampled from the doubted step only
                k = next(i for i, s in enumerate(before.step_scores) if s < 0.5)
                assert after.steps[:k] == before.steps[:k]
        assert r.chosen_index is None or r.candidates[r.chosen_index].meta["final"]


def test_self_reflection_revise_mode_puts_the_feedback_in_the_prompt():
    seen = []

    class Recording(StepPolicy):
        def generate(self, prompts, n=1, **kw):
            seen.extend(prompts)
            return super().generate(prompts, n, **kw)

    SelfReflection(n=2, rounds=1, mode="revise").run(problems(1), Recording(p_bad=1.0), StepPRM())
    assert any("looks wrong (the verifier scores it 0.10)" in p and "A previous attempt" in p for p in seen)


def test_mcts_merges_identical_samples_and_finds_the_answer():
    results = MCTS(n=6, children=4, rollouts=0).run(problems(3), StepPolicy(p_bad=0.0), StepPRM())
    r = results[0]
    assert r.chosen_answer == "7"
    assert max(n["samples"] for n in r.meta["tree"]) == 4  # four identical samples, one node
    with_rollouts = MCTS(n=8, children=3, rollouts=2).run(problems(20), StepPolicy(p_bad=0.3, seed=5), StepPRM())
    sampled = BestOfN(n=1).run(problems(20), StepPolicy(p_bad=0.3, seed=5), StepPRM())
    assert accuracy(with_rollouts) >= 0.8 > 0.6 > accuracy(sampled)
    assert any(c.meta["source"] == "rollout" for c in with_rollouts[0].candidates)


class DeadEndPolicy(StepPolicy):
    """Every sample from the root is an empty step, but for one "ok 0"; then StepPolicy."""

    def generate(self, prompts, n=1, **kw):
        out = super().generate(prompts, n, **kw)
        for prompt, comps in zip(prompts, out):
            if "ok" not in prompt and "bad" not in prompt:
                comps[1:] = [Completion("", 1, False, "step") for _ in comps[1:]]
        return out


def test_mcts_values_a_dead_child_at_zero_and_never_walks_to_it_again():
    (r,) = MCTS(n=6, children=4, rollouts=0).run(problems(1), DeadEndPolicy(p_bad=0.0), StepPRM())
    tree = r.meta["tree"]
    dead = [n for n in tree if n["dead"]]
    assert dead and all(n["visits"] == 1 and n["value"] == 0.0 for n in dead)
    assert not any(tree[n["parent"]]["dead"] for n in tree if n["parent"] is not None)
    assert r.chosen_answer == "7"


def test_every_strategy_writes_only_its_search():
    """``run`` is the template: PRM check, Meter, search, then the shared selection stage."""
    from strategies.accounting import Meter
    from strategies.base import Found
    from strategies.selection import PRMStrategy

    class Fixed(PRMStrategy):
        name = "fixed"

        def search(self, problems, policy, prm, meter: Meter):
            cands = [cand("1", [0.9, 0.5]), cand("2", [0.6]), cand("2", [0.5])]
            meter.usage[0].prompt_tokens += 5
            return [Found(cands, among=[0, 1, 2], meta={"x": 1})]

    with pytest.raises(ValueError, match="prm=toy"):
        Fixed(1).run(problems(1), StepPolicy())
    prm = StepPRM()
    (r,) = Fixed(1, selection="highest").run(problems(1), StepPolicy(), prm)
    assert (r.chosen_answer, r.selection, r.prompt_tokens, r.meta) == ("2", "highest/min", 5, {"x": 1})
    assert r.candidates[0].score == pytest.approx(0.5)  # the PRM's aggregation is recorded
    prm.aggregation = "mean"
    assert Fixed(1, selection="highest").run(problems(1), StepPolicy(), prm)[0].chosen_answer == "1"
    from strategies.base import StrategyConfigError

    with pytest.raises(StrategyConfigError, match="aggregation"):
        Fixed(1, aggregation="min")  # one owner: the PRM


def test_select_all_names_every_rule():
    from strategies.selection import RULES, select_all

    cands = [cand("1", [0.9, 0.5]), cand("2", [0.6]), cand("2", [0.5]), cand("1", [0.3])]
    chosen = select_all(cands)
    assert list(chosen) == list(RULES) and len(RULES) == 9
    assert chosen["highest/last"] == 1 and chosen["highest/mean"] == 0 and chosen["majority"] == 0
    assert chosen["weighted_majority/min"] == 1
    unscored = [Candidate(text="", steps=[], answer="1", completion_tokens=1)]
    assert select_all(unscored) == {"majority": 0}


def test_meter_counts_what_the_engine_computed():
    from strategies.accounting import Meter

    class Cached(StepPolicy):
        def generate(self, prompts, n=1, **kw):
            out = super().generate(prompts, n, **kw)
            for comps in out:
                for c in comps:
                    c.prompt_tokens_computed = 2
            return out

    meter = Meter(1)
    meter.generate(Cached(), ["problem 0\n\n"], [0], n=3)
    meter.generate(StepPolicy(), ["problem 0\n\n"], [0], n=3)  # says nothing: all of it, per sample
    u = meter.usage[0]
    assert u.prompt_tokens == 2 * 3 * 11 and u.prompt_tokens_computed == 3 * 2 + 3 * 11


# --- through the real components --------------------------------------------------------------

STRATEGIES = ["best_of_n", "beam_search", "dvts", "lookahead", "self_reflection", "mcts"]


@pytest.mark.vllm
@pytest.mark.parametrize("name", STRATEGIES)
def test_each_strategy_through_vllm_with_a_trained_prm(name, vllm_policy, vllm_prm):
    from conftest import VLLM_TEST_OVERRIDES, compose_run
    from itc.toy import generate
    from strategies import build_strategy

    cfg = compose_run(VLLM_TEST_OVERRIDES + [f"strategy={name}", "n=4", "prm=toy"])
    strategy = build_strategy(cfg.strategy)
    assert strategy.name == name and strategy.n == 4
    probs = [p.to_problem() for p in generate(3, seed=21, levels=(1, 2, 3))]
    results = strategy.run(probs, vllm_policy, vllm_prm)
    assert [r.problem_id for r in results] == [p.id for p in probs]
    for r in results:
        assert r.candidates and r.prompt_tokens > 0 and r.completion_tokens > 0 and r.prm_tokens > 0
        scored = [c for c in r.candidates if c.steps]
        assert scored and all(len(c.step_scores) == len(c.steps) for c in scored)
        assert all(0.0 <= s <= 1.0 for c in scored for s in c.step_scores)
        if r.chosen_index is not None:
            chosen = r.candidates[r.chosen_index]
            assert chosen.finished and chosen.answer == r.chosen_answer


@pytest.mark.vllm
def test_vllm_policy_reports_the_prompt_tokens_it_computed(vllm_policy):
    """Each sample's request reports its prefix-cache hits (num_cached_tokens): a prompt sent
    again is mostly read from the cache, and each of n samples is its own request."""
    from strategies.accounting import Meter

    steps = ["A+3 2+3=5, carrying the sum along", "B-1 5-1=4, then the next operation", "C*2 4*2=8"]
    prompt = vllm_policy.format_prompt("Start at 2. Apply A+3, then B-1, then C*2, then D+7.", steps)
    size = vllm_policy.count_tokens(prompt)
    assert size > 64  # two full 32-token KV blocks at least
    meter = Meter(1)
    first = meter.generate(vllm_policy, [prompt], [0], n=3, one_step=True)[0]
    again = meter.generate(vllm_policy, [prompt], [0], n=3, one_step=True)[0]
    assert len(first) == len(again) == 3
    assert all(0 < c.prompt_tokens_computed <= size for c in first + again)
    assert all(c.prompt_tokens_computed < size - 32 for c in again)  # whole blocks from the cache
    u = meter.usage[0]
    assert u.prompt_tokens == 2 * 3 * size  # sent: once per sample's request
    assert u.prompt_tokens_computed < u.prompt_tokens
    assert u.prompt_tokens_computed == sum(c.prompt_tokens_computed for c in first + again)


@pytest.mark.vllm
def test_itc_run_with_a_search_strategy_writes_compute_accounting(tmp_path, vllm_policy, vllm_prm, trained_prm):
    import json

    from conftest import VLLM_TEST_OVERRIDES, compose_run
    from itc.runner import run_experiment

    # the run's identity names the PRM it is given (prm=toy alone would build the toy PRM)
    model = f"prm.model={trained_prm[0]}/checkpoint"
    cfg = compose_run(
        VLLM_TEST_OVERRIDES
        + ["strategy=beam_search", "n=8", "strategy.beam_width=2", "prm=toy", model, "dataset.num_problems=4"]
    )
    metrics = run_experiment(cfg, tmp_path, policy=vllm_policy, prm=vllm_prm)
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for r in records:
        assert r["prm_tokens"] > 0
        assert r["policy_flops"] == 2 * vllm_policy.num_parameters * (r["prompt_tokens_computed"] + r["completion_tokens"])
        assert r["prm_flops"] == 2 * vllm_prm.num_parameters * r["prm_tokens_computed"]
        # each sample's request computes at least its prompt's last partial KV block, so a
        # problem solved in a step or two can compute more than its prompts' sizes
        assert r["prompt_tokens_computed"] > 0
        assert 0 < r["prm_tokens_computed"] <= r["prm_tokens"]
        assert r["selection"] == "highest/min" and len(r["correct_by_selection"]) == 9
    assert metrics["prm_tokens"] == sum(r["prm_tokens"] for r in records)
    assert metrics["prompt_tokens_computed"] < metrics["prompt_tokens"]  # the beams' prefixes, cached
    # (the test PRM's engine keeps 128-token KV blocks, longer than these inputs: nothing of
    # them is cached; tests/test_prm_scoring.py checks the PRM's computed rows)
    assert metrics["accuracy"] == metrics["accuracy_by_selection"]["highest/min"]
    assert metrics["flops_per_problem"] == pytest.approx(
        sum(r["policy_flops"] + r["prm_flops"] for r in records) / 4
    )


def test_identical_partials_are_scored_once_and_charged_once():
    from strategies.accounting import Meter
    from strategies.steps import score

    class Recording(StepPRM):
        def score_with_usage(self, problems, candidates, known=None):
            self.seen = candidates
            return super().score_with_usage(problems, candidates, known)

    prm, meter = Recording(), Meter(2)
    parts = [Partial(0, ["ok 0"]), Partial(0, ["ok 0"]), Partial(0, ["bad 0"]), Partial(1, ["ok 0"]), Partial(1)]
    score(meter, prm, problems(2), parts)
    assert prm.seen == [[["ok 0"], ["bad 0"]], [["ok 0"]]]
    assert [p.step_scores for p in parts] == [[0.9], [0.9], [0.1], [0.9], []]
    assert parts[0].step_scores is not parts[1].step_scores
    assert [u.prm_tokens for u in meter.usage] == [2, 1]


def test_only_the_steps_added_since_the_last_scoring_are_sent_for_scores():
    from strategies.accounting import Meter
    from strategies.steps import score

    class Recording(StepPRM):
        def score_with_usage(self, problems, candidates, known=None):
            self.seen = (candidates, known)
            return super().score_with_usage(problems, candidates, known)

    prm, meter = Recording(), Meter(1)
    parent = Partial(0, ["bad 0"])
    score(meter, prm, problems(1), [parent])
    kids = [parent.child("ok 1", 1, "step"), parent.child("ok 1", 1, "step"), parent.child("", 1, "length")]
    kids[1].step_scores = []  # a copy that lost its scores is scored in full
    score(meter, prm, problems(1), kids)
    assert prm.seen == ([[["bad 0", "ok 1"]]], [[0]])  # identical partials: the fewer known
    assert [k.step_scores for k in kids] == [[0.1, 0.1], [0.1, 0.1], [0.1]]  # an empty step adds nothing
    fresh = Partial(0, ["bad 0", "ok 1", "ok 2"], [0.1, 0.1])
    score(meter, prm, problems(1), [fresh])
    assert prm.seen == ([[["bad 0", "ok 1", "ok 2"]]], [[2]])
    assert fresh.step_scores == [0.1, 0.1, 0.1]


# --- the false-equation check beside the PRM ------------------------------------------------


class EquationPolicy(StepPolicy):
    """StepPolicy whose steps state an equation: true in an "ok" step, false in a "bad" one."""

    def _next(self, steps, temperature):
        step = super()._next(steps, temperature)
        if step.startswith(("ok", "bad")):
            k = len(steps)
            step += f": {k}+1={k + 1 if step.startswith('ok') else k + 2}"
        return step


class BlindPRM(StepPRM):
    """A PRM that finds nothing wrong."""

    @staticmethod
    def on_track(steps):
        return [0.9] * len(steps)


def test_check_equations_zeroes_steps_with_false_equations():
    from strategies.accounting import Meter
    from strategies.steps import score, zero_false_equations

    assert zero_false_equations(["A+5 7+5=12", "B-3 12-3=8", "\\boxed{8}"], [0.9, 0.8, 0.7]) == [0.9, 0.0, 0.7]
    parts = [Partial(0, ["ok 0: 0+1=1", "bad 1: 1+1=3"])]
    score(Meter(1), BlindPRM(), problems(1), parts)
    assert parts[0].step_scores == [0.9, 0.9]
    parts = [Partial(0, ["ok 0: 0+1=1", "bad 1: 1+1=3"])]
    score(Meter(1), BlindPRM(), problems(1), parts, check_equations=True)
    assert parts[0].step_scores == [0.9, 0.0]


@pytest.mark.parametrize("make", [
    lambda check: BeamSearch(n=8, beam_width=2, check_equations=check),
    lambda check: BestOfN(n=16, selection="highest", check_equations=check),
])
def test_search_with_a_blind_prm_is_steered_by_the_equation_check(make):
    probs = problems(20)
    blind = make(False).run(probs, EquationPolicy(p_bad=0.3, seed=3), BlindPRM())
    checked = make(True).run(probs, EquationPolicy(p_bad=0.3, seed=3), BlindPRM())
    assert accuracy(checked) >= 0.9 > 0.5 > accuracy(blind)


@pytest.mark.vllm
def test_check_equations_through_vllm_and_the_real_config(vllm_policy, vllm_prm):
    from conftest import VLLM_TEST_OVERRIDES, compose_run
    from itc.grading.equations import false_equation
    from itc.toy import generate
    from strategies import build_strategy

    cfg = compose_run(VLLM_TEST_OVERRIDES + ["strategy=beam_search", "n=4", "prm=toy", "strategy.check_equations=true"])
    strategy = build_strategy(cfg.strategy)
    assert strategy.settings.check_equations
    probs = [p.to_problem() for p in generate(4, seed=5, levels=(3, 4))]
    steps = 0
    for r in strategy.run(probs, vllm_policy, vllm_prm):
        for c in r.candidates:
            for step, s in zip(c.steps, c.step_scores):
                steps += 1
                assert s == 0.0 if false_equation(step) else s > 0.0
    assert steps > 0


@pytest.mark.parametrize("name", ["beam_search", "dvts", "mcts", "self_reflection", "lookahead", "particle_filtering"])
def test_a_search_samples_the_same_whatever_its_batch(name):
    """Every request carries a key (problem, call, place): a problem's samples do not depend
    on which other problems share its batch."""
    from conftest import compose_run
    from strategies import build_strategy

    def run(batch):
        strategy = build_strategy(compose_run([f"strategy={name}", "n=4", "prm=toy"]).strategy)
        results = strategy.run(batch, StepPolicy(), StepPRM())
        return [[c.text for c in r.candidates] for r in results]

    together = run(problems(3))
    assert run(problems(3)[2:]) == together[2:]
    assert run(problems(3)[1:2]) == together[1:2]
