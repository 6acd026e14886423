"""Beam search in-process against the same search through one and two vLLM servers.

    python benchmarks/server_bench.py [--problems 64] [--n 16] [--beam-width 4] [--seed 0]
                                      [--batch 16] [--concurrency 4] [--gpu-memory-utilization 0.04]
                                      [--no-log] [OVERRIDE ...]

One workload (beam search, N=16, embedded-world problems, the same seed and configs) in
arms run one after the other in this process:

- ``in-process``: the toy policy and toy PRM on in-process vLLM engines (``backend=vllm``);
- ``one server``: one policy server and one PRM server (``itc-serve``'s commands, the same
  engine settings), ``backend=openai``;
- ``..., one request per sample``: the same with ``policy.openai.parallel_sampling=false``
  (the default sends a prompt's samples in one request);
- ``two servers``: two of each, the client balancing between them;
- ``two servers, concurrency``: the same, the problems in batches of ``--batch`` with
  ``--concurrency`` batches in flight (the runner's ``concurrency``).

Each arm is warmed up on two problems, then timed on all of them. For each: wall time,
completion tokens per second, and the ratio to the engine's raw throughput, measured
in-process as ``llm.generate`` on the same prompts producing the same number of tokens
(``ignore_eos``). The last line is JSON; the figures also go to the results log
(``docs/results/``) unless ``--no-log``. The servers are stopped before it exits.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--beam-width", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16, help="problems per batch in the concurrency arm")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.04, help="KV cache share, every engine")
    ap.add_argument("--no-log", action="store_true", help="print only; write no results-log entry")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, for every arm")
    args = ap.parse_args()

    from itc.policy import build_policy
    from itc.toy import generate
    from prm.scoring import build_prm

    mem = args.gpu_memory_utilization
    base = ["prm=toy", f"seed={args.seed}", f"policy.vllm.gpu_memory_utilization={mem}",
            f"prm.vllm.gpu_memory_utilization={mem}", *args.overrides]
    problems = [p.to_problem() for p in generate(args.problems, seed=args.seed)]
    arms: dict[str, dict] = {}

    # in-process, then the raw engine throughput on the same prompts and token count
    cfg = _compose(base)
    policy = build_policy(cfg.policy, seed=args.seed)
    prm = build_prm(cfg.prm, seed=args.seed)
    arms["in-process"] = _timed(problems, policy, prm, args, [problems])
    print(f"in-process: {arms['in-process']}", flush=True)
    raw = _raw_throughput(policy, problems, args.n, arms["in-process"]["completion_tokens"])
    print(f"raw llm.generate: {raw}", flush=True)
    from itc.policy.vllm_backend import shutdown_engines

    del policy, prm
    shutdown_engines()

    from itc.cli.serve import Server, server_command, wait_healthy

    log_dir = Path(tempfile.mkdtemp(prefix="server-bench-"))
    port = 18900
    servers: list[Server] = []

    def start(role: str, count: int) -> list[str]:
        nonlocal port
        group = _compose(base)[role]
        from omegaconf import OmegaConf

        new = []
        for _ in range(count):
            argv, env = server_command(role, OmegaConf.to_container(group, resolve=True), "127.0.0.1", port, args.seed)
            new.append(Server(role, argv, env, "127.0.0.1", port, log_dir / f"{role}-{port}.log"))
            port += 1
        for s in new:
            s.start()
        servers.extend(new)
        t0 = time.perf_counter()
        wait_healthy(new, 900, say=lambda m: None)
        print(f"{count} {role} server(s) healthy in {time.perf_counter() - t0:.0f} s", flush=True)
        return [s.url for s in servers if s.role == role]

    try:
        for label, count in (("one server", 1), ("two servers", 2)):
            policy_urls = start("policy", count - len([s for s in servers if s.role == "policy"]))
            prm_urls = start("prm", count - len([s for s in servers if s.role == "prm"]))
            served = _compose(
                base + ["policy.backend=openai", f"policy.openai.base_urls=[{','.join(policy_urls)}]",
                        "prm.backend=openai", f"prm.openai.base_urls=[{','.join(prm_urls)}]"]
            )
            policy = build_policy(served.policy, seed=args.seed)
            prm = build_prm(served.prm, seed=args.seed)
            arms[label] = _timed(problems, policy, prm, args, [problems])
            print(f"{label}: {arms[label]}", flush=True)
            policy.parallel_sampling = False  # policy.openai.parallel_sampling=false
            apart = f"{label}, one request per sample"
            arms[apart] = _timed(problems, policy, prm, args, [problems])
            print(f"{apart}: {arms[apart]}", flush=True)
            policy.parallel_sampling = True
            if count == 2:
                batches = [problems[s : s + args.batch] for s in range(0, len(problems), args.batch)]
                label = f"two servers, concurrency {args.concurrency}"
                arms[label] = _timed(problems, policy, prm, args, batches, args.concurrency)
                print(f"{label}: {arms[label]}", flush=True)
            policy.close()
            prm.close()
    finally:
        for s in servers:
            s.stop(grace=10)

    for arm in arms.values():
        arm["tokens_per_s"] = round(arm["completion_tokens"] / arm["seconds"], 1)
        arm["ratio_to_raw"] = round(arm["tokens_per_s"] / raw["tokens_per_s"], 3)
        arm["ratio_to_in_process"] = round(arms["in-process"]["seconds"] / arm["seconds"], 3)
    summary = {"problems": len(problems), "n": args.n, "beam_width": args.beam_width, "raw": raw, "arms": arms}
    if not args.no_log:
        from itc.results_log import write_entry

        print(f"results log: {write_entry('server_bench: beam search in-process vs one and two servers', entry_body(summary))}")
    print(json.dumps(summary))


def _compose(overrides: list[str]):
    with initialize_config_module(config_module="configs", version_base="1.3"):
        return compose(config_name="run", overrides=overrides)


def _timed(problems, policy, prm, args, batches, concurrency: int = 1) -> dict:
    """Beam search over ``batches`` (``concurrency`` at once), after a warm-up on two problems."""
    from itc.grading import answers_equivalent
    from itc.runner import in_order
    from strategies.beam_search import BeamSearch

    strategy = BeamSearch(n=args.n, beam_width=args.beam_width)
    strategy.run(problems[:2], policy, prm)  # warm-up: compiled, connections open
    t0 = time.perf_counter()
    results = [r for out in in_order(lambda b: strategy.run(b, policy, prm), batches, concurrency) for r in out]
    seconds = time.perf_counter() - t0
    correct = sum(answers_equivalent(r.chosen_answer, p.answer) for r, p in zip(results, problems))
    return {
        "seconds": round(seconds, 2),
        "accuracy": round(correct / len(problems), 4),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "prompt_tokens_computed": sum(r.prompt_tokens_computed for r in results),
        "prm_tokens": sum(r.prm_tokens for r in results),
    }


def _raw_throughput(policy, problems, n: int, tokens: int) -> dict:
    """``llm.generate`` on the problems' prompts, ``n`` samples each, ``ignore_eos``, about
    ``tokens`` completion tokens in all: the engine's own tokens per second."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    ids = policy.encode_prompts([policy.format_prompt(p.problem) for p in problems])
    per_sample = max(1, math.ceil(tokens / (len(ids) * n)))
    params = SamplingParams(n=n, max_tokens=per_sample, ignore_eos=True, temperature=0.8, seed=0)
    prompts = [TokensPrompt(prompt_token_ids=i) for i in ids]
    policy.llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    out = policy.llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    done = sum(len(c.token_ids) for o in out for c in o.outputs)
    return {"seconds": round(seconds, 2), "completion_tokens": done, "tokens_per_s": round(done / seconds, 1)}


def entry_body(summary: dict) -> str:
    """The figures as a results-log body (Markdown): one row per arm."""
    s = summary
    return "\n".join(
        [
            f"Beam search (N={s['n']}, M={s['beam_width']}, PRM `toy`) on {s['problems']} toy problems, "
            f"same seeds and engine settings in every arm, one timed run each after a warm-up. Raw engine "
            f"throughput (`llm.generate`, {s['raw']['completion_tokens']} tokens, ignore_eos): "
            f"{s['raw']['tokens_per_s']} tokens/s.",
            "",
            "| arm | wall s | completion tokens | prompt tokens computed | tokens/s | ratio to raw "
            "| in-process wall / arm wall | accuracy |",
            "|---|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {a['seconds']} | {a['completion_tokens']} | {a['prompt_tokens_computed']} | {a['tokens_per_s']} "
                f"| {a['ratio_to_raw']} | {a['ratio_to_in_process']} | {a['accuracy']} |"
                for name, a in s["arms"].items()
            ),
        ]
    )


if __name__ == "__main__":
    main()
