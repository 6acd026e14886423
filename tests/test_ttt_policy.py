"""A TTT checkpoint serves as a policy through the transformers backend and a strategy."""

import pytest
import torch

from fakes import LengthPRM
from itc.policy import PromptConfig, SamplingConfig
from itc.policy.hf_backend import HFPolicy
from itc.toy import generate
from itc.toy.tokenizer import build_tokenizer
from itc.ttt import TTTConfig, TTTForCausalLM
from strategies.majority import MajorityVote


def ttt_policy(path) -> HFPolicy:
    """A small randomly initialised TTT-Linear LM saved to ``path``, served by the
    transformers backend."""
    torch.manual_seed(0)
    tok = build_tokenizer()
    config = TTTConfig(
        vocab_size=len(tok), hidden_size=64, num_attention_heads=2, num_hidden_layers=2,
        intermediate_size=128, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    TTTForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return HFPolicy(
        "ttt", str(path), PromptConfig(), SamplingConfig(max_tokens=12, max_step_tokens=6),
        dtype="float32", max_model_len=512,
    )


def test_ttt_policy_runs_majority_vote(tmp_path):
    policy = ttt_policy(tmp_path)
    assert isinstance(policy.model, TTTForCausalLM)
    problems = [p.to_problem() for p in generate(3, seed=0)]
    results = MajorityVote(n=2).run(problems, policy)
    assert len(results) == 3 and all(len(r.candidates) == 2 for r in results)
    assert all(0 < c.completion_tokens <= 12 for r in results for c in r.candidates)
    steps = policy.generate([policy.format_prompt(p.problem) for p in problems], n=2, one_step=True)
    assert all(c.num_tokens <= 6 for o in steps for c in o)


@pytest.mark.parametrize("name", ["best_of_n", "beam_search", "dvts", "lookahead", "self_reflection", "mcts"])
def test_ttt_policy_runs_every_search_strategy(tmp_path, name):
    from strategies.beam_search import BeamSearch
    from strategies.best_of_n import BestOfN
    from strategies.dvts import DVTS
    from strategies.lookahead import Lookahead
    from strategies.mcts import MCTS
    from strategies.self_reflection import SelfReflection

    make = {
        "best_of_n": lambda: BestOfN(n=2),
        "beam_search": lambda: BeamSearch(n=2, beam_width=2, max_steps=3),
        "dvts": lambda: DVTS(n=2, beam_width=2, max_steps=3),
        "lookahead": lambda: Lookahead(n=2, beam_width=2, max_steps=2, lookahead=1),
        "self_reflection": lambda: SelfReflection(n=2, rounds=1),
        "mcts": lambda: MCTS(n=2, children=2, max_depth=3),
    }
    policy = ttt_policy(tmp_path)
    problems = [p.to_problem() for p in generate(2, seed=0)]
    results = make[name]().run(problems, policy, LengthPRM())
    assert [r.problem_id for r in results] == [p.id for p in problems]
    for r in results:
        assert r.completion_tokens > 0 and r.prompt_tokens > 0
        # a random model rarely finishes a solution; MCTS then answers nothing but keeps its tree
        assert r.candidates or (name == "mcts" and len(r.meta["tree"]) > 1)
        assert all(len(c.step_scores) == len(c.steps) for c in r.candidates if c.step_scores is not None)
