"""A causal LM's own token probabilities as a step verifier: the reference a trained PRM on
the embedded world is measured against.

    python -m evals.lm_verifier [--lm toy-qwen2] [--problems 200] [--samples 4]

Samples held-out embedded-world solutions from the toy policy (vLLM), labels every step
exactly, and scores each step by the LM's probability of the step's tokens given everything
before (the product over the step, and the minimum) and by its margin (the least, over the
step's tokens, of the token's logit minus the LM's top logit there: what the toy PRM's built
verifier layers approximate, ``prm.readout``), and by DeepConf's token confidence (the mean,
over the step's tokens, of minus the mean of the top 20 log-probabilities where each is
predicted: ``strategy=deepconf``'s signal, read as a verifier). The first-error threshold is
chosen on 100 other problems, as ``itc-eval-prm`` does. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import numpy as np
import torch
from hydra import compose, initialize_config_module

from itc.candidates import sample_candidates
from prm.metrics import best_threshold, processbench, roc_auc
from itc.policy import Policy, build_policy, resolve_model_path
from itc.toy import generate
from prm.data import StepLabelled
from prm.data.toy import gold_records
from prm.training import resolve_base


CONFIDENCE_TOP_K = 20  # DeepConf's k (configs/strategy/deepconf.yaml top_logprobs)


def step_probabilities(
    model, policy: Policy, record: StepLabelled
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(product, min) of the LM's token probabilities over each step, given the prompt and
    the steps before (the step delimiter is part of no step), the step's least margin
    (token logit minus top logit), and its mean token confidence (DeepConf's)."""
    tok = policy.tokenizer
    ids = tok(policy.format_prompt(record.problem), add_special_tokens=False)["input_ids"]
    spans = []
    for step in record.steps:
        start = len(ids)
        ids = ids + tok(step, add_special_tokens=False)["input_ids"]
        spans.append((start, len(ids)))
        ids = ids + tok(policy.step_delimiter, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()[:-1]
    logp = torch.log_softmax(logits, -1)
    rows, nxt = torch.arange(len(ids) - 1), torch.tensor(ids[1:])
    token_logp = logp[rows, nxt].numpy()
    token_margin = (logits[rows, nxt] - logits.max(-1).values).numpy()
    token_conf = (-logp.topk(min(CONFIDENCE_TOP_K, logp.shape[-1]), dim=-1).values.mean(-1)).numpy()
    prod = [float(np.exp(token_logp[a - 1 : b - 1].sum())) for a, b in spans]
    low = [float(np.exp(token_logp[a - 1 : b - 1].min())) for a, b in spans]
    margin = [float(token_margin[a - 1 : b - 1].min()) for a, b in spans]
    conf = [float(token_conf[a - 1 : b - 1].mean()) for a, b in spans]
    return prod, low, margin, conf


def report(
    model, policy: Policy, calibration: Sequence[StepLabelled], test: Sequence[StepLabelled]
) -> dict[str, dict[str, float]]:
    cal = [step_probabilities(model, policy, r) for r in calibration]
    tst = [step_probabilities(model, policy, r) for r in test]
    grids = {
        "product": [float(x) for x in np.exp(np.linspace(-12, 0, 200))],  # spans decades
        "min": [float(x) for x in np.exp(np.linspace(-12, 0, 200))],
        "margin": [float(x) for x in np.linspace(-12, 0, 241)],
        "token_confidence": [float(x) for x in np.linspace(0, 30, 301)],
    }
    out = {}
    for i, (how, grid) in enumerate(grids.items()):
        th = best_threshold([c[i] for c in cal], [r.first_error() for r in calibration], grid)
        scores = [t[i] for t in tst]
        out[how] = {
            **processbench(scores, [r.first_error() for r in test], th),
            "step_roc_auc": roc_auc(
                [x for s in scores for x in s], [y >= 0.5 for r in test for y in r.labels]
            ),
        }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm", default="toy-qwen2", help="causal LM: toy-qwen2, toy (the policy) or a path")
    ap.add_argument("--problems", type=int, default=200, help="held-out test problems")
    ap.add_argument("--samples", type=int, default=4, help="solutions sampled per problem")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with initialize_config_module(config_module="configs", version_base="1.3"):
        cfg = compose(config_name="eval_prm")
    policy = build_policy(cfg.policy, seed=args.seed)
    problems = [p.to_problem() for p in generate(100 + args.problems, args.seed, split="test")]
    cal_p, test_p = problems[:100], problems[100:]
    records = [
        gold_records(ps, [[c.text for c in cs] for cs in sample_candidates(policy, ps, args.samples)])
        for ps in (cal_p, test_p)
    ]
    policy.close()
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(resolve_base(args.lm))
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    result = {"lm": path, "test_solutions": len(records[1]), **report(model, policy, *records)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
