"""A TTT checkpoint serves as a policy through the transformers backend and a strategy."""

import torch

from itc.policy import PromptConfig, SamplingConfig
from itc.policy.hf_backend import HFPolicy
from itc.toy import generate
from itc.toy.tokenizer import build_tokenizer
from itc.ttt import TTTConfig, TTTForCausalLM
from strategies.majority import MajorityVote


def test_ttt_policy_runs_majority_vote(tmp_path):
    torch.manual_seed(0)
    tok = build_tokenizer()
    config = TTTConfig(
        vocab_size=len(tok), hidden_size=64, num_attention_heads=2, num_hidden_layers=2,
        intermediate_size=128, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    TTTForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    policy = HFPolicy(
        "ttt", str(tmp_path), PromptConfig(), SamplingConfig(max_tokens=12, max_step_tokens=6),
        dtype="float32", max_model_len=512,
    )
    assert isinstance(policy.model, TTTForCausalLM)
    problems = [p.to_problem() for p in generate(3, seed=0)]
    results = MajorityVote(n=2).run(problems, policy)
    assert len(results) == 3 and all(len(r.candidates) == 2 for r in results)
    assert all(0 < c.completion_tokens <= 12 for r in results for c in r.candidates)
    steps = policy.generate([policy.format_prompt(p.problem) for p in problems], n=2, one_step=True)
    assert all(c.num_tokens <= 6 for o in steps for c in o)
