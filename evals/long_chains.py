"""Long chains of thought on the embedded world: a TTT policy against a transformer policy.

    python -m evals.long_chains [--quick] [--out FILE] [--threads N]

Trains two policies from scratch on the CPU with the same data, batches, optimizer and number
of steps, on the toy world's long chains (``Start at 7 and do A+5 B-3 ... AL-6.``: one step
per operation, additions and subtractions only, 8 to 64 operations, so two-letter labels
appear past 52; one chain length per batch, lengths taken in turn):

* TTT: ``TTTForCausalLM`` with TTT-Linear layers in the transformer backbone
  (``--ttt-backbone mamba`` for the paper's Mamba backbone);
* transformer: GPT-2 as the embedded world's policy (learned absolute positions,
  ``n_positions`` 1024: a 64-step problem with its solution is at most ~880 tokens).

Both get the same hidden size, layers and heads; the TTT model's SwiGLU width is chosen so the
two parameter counts match (GPT-2's position table included). The models are cached under
``<itc cache>/toy/long-chain-<arch>-<key>``, keyed by the spec and the code they depend on.

Then, on held-out problems only (``itc.toy.task.is_held_out``; training never sees them),
through the transformers policy backend (``HFPolicy``: batched, left padded, ``generate``):

* greedy decoding, per chain length, for both models:
    accuracy     the final answer is right;
    on_track     fraction of the reference's steps (``\\boxed{}`` included) solved in order,
                 i.e. before the first error (``itc.toy.step_labels``);
    steps        fraction of the operation steps done right from the solution's own previous
                 value (right operation, right arithmetic), so one slip does not zero the rest;
    ops          fraction of steps that copy the right operation from the problem (the
                 long-range lookup; chance is about 1/18);
    arithmetic   fraction of steps whose equation holds, whatever its operands;
* best-of-N with the TTT policy: N samples per problem of one chain length at temperature
  0.8; majority-vote accuracy and pass@N (some sample right) over the first N samples.

Prints the tables, then one JSON object of all figures as the last line (also written to
``--out``). Threads default to 1, the setting the default budget is sized for.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerBase

from itc.cache import BUILD_INFO, cache_entry, cached_build, fingerprint
from itc.toy import task
from itc.toy.build import (
    ToyPolicySpec,
    chat_prompt,
    collate,
    encode_sft_examples,
    model_config,
    warmup_cosine,
)
from itc.toy.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

ARCHITECTURES = ("ttt", "gpt2")
LABELS = {"ttt": "TTT-Linear", "gpt2": "GPT-2"}
STEP_METRICS = ("accuracy", "on_track", "steps", "ops", "arithmetic")


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines the two trained policies (its hash keys the cache)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    gpt2_intermediate_size: int = 512
    max_positions: int = 1024
    ttt_backbone: str = "transformer"
    train_lengths: tuple[int, ...] = (8, 16, 32, 64)
    train_steps: int = 600
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    seed: int = 0


@dataclass(frozen=True)
class EvalSpec:
    """What is measured on held-out problems."""

    lengths: tuple[int, ...] = (8, 16, 32, 64)
    problems_per_length: int = 64
    bon_length: int = 16
    bon_problems: int = 64
    bon_ns: tuple[int, ...] = (1, 4, 16)
    temperature: float = 0.8
    batch_size: int = 64
    seed: int = 0


QUICK_TRAIN = TrainSpec(
    hidden_size=32, num_layers=1, gpt2_intermediate_size=64, train_steps=4, batch_size=2,
    warmup_steps=1,
)
QUICK_EVAL = EvalSpec(problems_per_length=2, bon_problems=2, bon_ns=(1, 4))


def gpt2_config(spec: TrainSpec, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The transformer: the embedded world's GPT-2 layout at this spec's sizes."""
    toy = ToyPolicySpec(
        architecture="gpt2",
        hidden_size=spec.hidden_size,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        intermediate_size=spec.gpt2_intermediate_size,
        max_position_embeddings=spec.max_positions,
    )
    return model_config(toy, tokenizer)


def ttt_config(
    spec: TrainSpec, tokenizer: PreTrainedTokenizerBase, intermediate_size: int
) -> PretrainedConfig:
    from itc.ttt import TTTConfig

    return TTTConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        ttt_layer_type="linear",
        backbone=spec.ttt_backbone,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )


def _num_parameters(config: PretrainedConfig) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # not done under init_empty_weights; tied weights count once
    return sum(p.numel() for p in model.parameters())


def matched_ttt_intermediate(spec: TrainSpec, tokenizer: PreTrainedTokenizerBase) -> int:
    """The TTT model's SwiGLU width (a multiple of 8) that best matches GPT-2's parameters."""
    target = _num_parameters(gpt2_config(spec, tokenizer))
    lo, hi = (_num_parameters(ttt_config(spec, tokenizer, i)) for i in (8, 16))
    per_unit = (hi - lo) / 8  # the count is linear in the width
    return max(8, 8 * round((8 + (target - lo) / per_unit) / 8))


def build_config(
    arch: str, spec: TrainSpec, tokenizer: PreTrainedTokenizerBase
) -> PretrainedConfig:
    if arch == "gpt2":
        return gpt2_config(spec, tokenizer)
    if arch == "ttt":
        return ttt_config(spec, tokenizer, matched_ttt_intermediate(spec, tokenizer))
    raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(ARCHITECTURES)})")


def training_batches(
    spec: TrainSpec, tokenizer: PreTrainedTokenizerBase
) -> Iterator[dict[str, torch.Tensor]]:
    """The training batches, the same for every architecture: one chain length per batch
    (little padding), lengths in turn, held-out problems skipped."""
    rng = random.Random(spec.seed)
    for step in range(spec.train_steps):
        length = spec.train_lengths[step % len(spec.train_lengths)]
        level = replace(task.LONG_CHAIN, num_ops=length)
        problems = []
        while len(problems) < spec.batch_size:
            p = task.sample_problem(rng, 0, level)
            if not task.is_held_out(p):
                problems.append(p)
        prompts = [chat_prompt(tokenizer, p.text) for p in problems]
        batch = encode_sft_examples(tokenizer, prompts, [p.solution for p in problems])
        yield collate(batch, tokenizer.pad_token_id)


def train(arch: str, spec: TrainSpec, out_dir: Path) -> dict:
    """Train one policy (AdamW, warmup then cosine, clipped gradients); save it with the
    toy tokenizer to ``out_dir``; return its stats."""
    tokenizer = build_tokenizer()
    config = build_config(arch, spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)

    sched = warmup_cosine(opt, spec.warmup_steps, spec.train_steps)
    start = time.time()
    losses: list[float] = []
    rounds = len(spec.train_lengths)  # the loss differs by length: average whole rounds
    for step, batch in enumerate(training_batches(spec, tokenizer)):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 40 == 0 or step + 1 == spec.train_steps:
            recent = losses[-5 * rounds :]
            log.info(
                "%s step %d/%d loss %.3f (%.0fs)", arch, step + 1, spec.train_steps,
                sum(recent) / len(recent), time.time() - start,
            )
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-rounds * max(1, min(10, len(losses) // rounds)) :]
    return {
        "architecture": arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.time() - start, 1),
        "final_loss": round(sum(tail) / len(tail), 4),
    }


def _code_fingerprint(arch: str) -> str:
    """The code a trained model depends on: the toy task, tokenizer and encoding, this
    module's model and training functions, and for TTT the backbone's source."""
    toy = Path(task.__file__).parent
    parts: list[str | bytes] = [
        (toy / name).read_bytes() for name in ("task.py", "tokenizer.py", "build.py")
    ]
    functions = (gpt2_config, ttt_config, matched_ttt_intermediate, training_batches, train)
    parts += [inspect.getsource(f) for f in functions]
    if arch == "ttt":
        import itc.ttt

        parts += [p.read_bytes() for p in sorted(Path(itc.ttt.__file__).parent.glob("*.py"))]
    return fingerprint(*parts)


def policy_path(arch: str, spec: TrainSpec) -> Path:
    """The cached policy folder for ``arch``, training it first when it is missing
    (:func:`itc.cache.cached_build`)."""
    fields = asdict(spec)
    if arch != "ttt":
        del fields["ttt_backbone"]  # so a TTT variant reuses the cached transformer

    def build(tmp: Path) -> None:
        stats = train(arch, spec, tmp)
        (tmp / BUILD_INFO).write_text(json.dumps({"spec": asdict(spec), **stats}, indent=2))

    key = (json.dumps(fields, sort_keys=True), arch, _code_fingerprint(arch))
    what = f"the long-chain {arch} policy ({spec.train_steps} steps)"
    return cached_build(cache_entry(f"toy/long-chain-{arch}", key), build, what=what)


def load_policy(path: Path, spec: TrainSpec, eval_spec: EvalSpec, seed: int):
    """The cached model as an ``HFPolicy`` (float32 on the CPU, context ``max_positions``)."""
    from itc.policy import PromptConfig, SamplingConfig
    from itc.policy.hf_backend import HFPolicy

    return HFPolicy(
        path.name,
        str(path),
        PromptConfig(),
        SamplingConfig(temperature=eval_spec.temperature),
        dtype="float32",
        max_model_len=spec.max_positions,
        seed=seed,
        device="cpu",
        batch_size=eval_spec.batch_size,
    )


_RESULT_RE = re.compile(r"=(\d+)$")


def grade(problem: task.ToyProblem, text: str) -> dict[str, float]:
    """One solution's figures, each in [0, 1] (see the module docstring)."""
    from itc.grading import answers_equivalent, extract_boxed
    from itc.candidates import split_steps

    steps = split_steps(text, task.STEP_DELIMITER)
    num_ops = len(problem.ops)
    ops = right = arithmetic = 0
    value: int | None = problem.start  # the solution's own running value
    for i, (op, x) in enumerate(problem.ops):
        step = steps[i] if i < len(steps) else ""
        head = f"{task.op_label(i)}{op}{x}"
        ops += step.startswith(head + " ")
        arithmetic += task.step_is_valid_arithmetic(step) is True
        if value is not None:
            right += step == f"{head} {value}{op}{x}={task.apply_op(value, op, x)}"
        m = _RESULT_RE.search(step)
        value = int(m.group(1)) if m else None
    return {
        "accuracy": float(answers_equivalent(extract_boxed(text), str(problem.answer))),
        "on_track": sum(task.step_labels(problem, steps)) / len(problem.reference_steps()),
        "steps": right / num_ops,
        "ops": ops / num_ops,
        "arithmetic": arithmetic / num_ops,
    }


def _max_tokens(policy, problems: Sequence[task.ToyProblem]) -> int:
    """Room for the longest reference solution (+ EOS) with a quarter to spare."""
    longest = max(policy.count_tokens(p.solution) + 1 for p in problems)
    return int(longest * 1.25) + 8


def _mean(rows: Sequence[dict[str, float]], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def greedy_by_length(policy, eval_spec: EvalSpec) -> dict[str, dict]:
    """Greedy figures per chain length on held-out problems."""
    out: dict[str, dict] = {}
    for length in eval_spec.lengths:
        problems = task.generate(
            eval_spec.problems_per_length, seed=eval_spec.seed, levels=(1,), split="test",
            long_chain_steps=length,
        )
        prompts = [policy.format_prompt(p.text) for p in problems]
        completions = policy.generate(
            prompts, n=1, temperature=0.0, max_tokens=_max_tokens(policy, problems)
        )
        graded = [grade(p, c[0].text) for p, c in zip(problems, completions)]
        row = {key: _mean(graded, key) for key in STEP_METRICS}
        row["mean_tokens"] = sum(c[0].num_tokens for c in completions) / len(completions)
        row["problems"] = len(problems)
        out[str(length)] = row
        log.info("%s greedy, %d steps: %s", policy.name, length, row)
    return out


def best_of_n(policy, eval_spec: EvalSpec) -> dict:
    """Majority vote and pass@N over the first N of max(N) samples per held-out problem."""
    from itc.candidates import majority_is_right, sample_candidates

    problems = task.generate(
        eval_spec.bon_problems, seed=eval_spec.seed + 1, levels=(1,), split="test",
        long_chain_steps=eval_spec.bon_length,
    )
    n_max = max(eval_spec.bon_ns)
    samples = sample_candidates(
        policy, [p.to_problem() for p in problems], n_max, temperature=eval_spec.temperature,
        max_tokens=_max_tokens(policy, problems),
    )
    majority = {n: 0 for n in eval_spec.bon_ns}
    passed = {n: 0 for n in eval_spec.bon_ns}
    sample_steps = 0.0
    for p, cands in zip(problems, samples):
        graded = [grade(p, c.text) for c in cands]
        correct = [g["accuracy"] == 1.0 for g in graded]
        sample_steps += _mean(graded, "steps")
        for n in eval_spec.bon_ns:
            majority[n] += majority_is_right(cands[:n], correct)
            passed[n] += any(correct[:n])
    k = len(problems)
    return {
        "length": eval_spec.bon_length,
        "problems": k,
        "temperature": eval_spec.temperature,
        "majority": {str(n): majority[n] / k for n in eval_spec.bon_ns},
        "pass": {str(n): passed[n] / k for n in eval_spec.bon_ns},
        "sample_steps": sample_steps / k,
    }


def run(spec: TrainSpec, eval_spec: EvalSpec) -> dict:
    """Train (or load) both policies and measure them; the report as a dict."""
    start = time.time()
    report: dict = {
        "train_spec": asdict(spec), "eval_spec": asdict(eval_spec), "models": {}, "by_length": {},
    }
    for arch in ARCHITECTURES:
        path = policy_path(arch, spec)
        info = json.loads((path / "build_info.json").read_text())
        t0 = time.time()
        policy = load_policy(path, spec, eval_spec, seed=eval_spec.seed)
        report["by_length"][arch] = greedy_by_length(policy, eval_spec)
        if arch == "ttt":
            report["best_of_n"] = best_of_n(policy, eval_spec)
        report["models"][arch] = {
            "parameters": info["parameters"],
            "train_seconds": info["train_seconds"],
            "final_loss": info["final_loss"],
            "eval_seconds": round(time.time() - t0, 1),
            "path": str(path),
        }
        del policy
    report["wall_seconds"] = round(time.time() - start, 1)
    return report


def format_tables(report: dict) -> str:
    """The report as Markdown tables."""
    lines = [
        "| model | parameters | train s | final loss | eval s |",
        "|---|---|---|---|---|",
    ]
    for arch, m in report["models"].items():
        lines.append(
            f"| {LABELS[arch]} | {m['parameters']:,} | {m['train_seconds']} "
            f"| {m['final_loss']:.3f} | {m['eval_seconds']} |"
        )
    for arch, rows in report["by_length"].items():
        lines += [
            "",
            f"{LABELS[arch]}, greedy on held-out problems",
            "",
            "| chain length | problems | " + " | ".join(STEP_METRICS) + " | tokens |",
            "|---" * (len(STEP_METRICS) + 3) + "|",
        ]
        for length, r in rows.items():
            cells = [f"{r[key]:.3f}" for key in STEP_METRICS] + [f"{r['mean_tokens']:.0f}"]
            lines.append(f"| {length} | {r['problems']} | " + " | ".join(cells) + " |")
    if "best_of_n" in report:
        b = report["best_of_n"]
        lines += [
            "",
            f"{LABELS['ttt']} best-of-N: {b['problems']} held-out problems of {b['length']} "
            f"steps, temperature {b['temperature']}",
            "",
            "| N | majority vote | pass@N |",
            "|---|---|---|",
        ]
        lines += [f"| {n} | {b['majority'][n]:.3f} | {b['pass'][n]:.3f} |" for n in b["majority"]]
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _given(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m evals.long_chains",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true",
        help="tiny models, 4 training steps, 2 problems per length (a smoke run, seconds)")
    add("--out", type=Path, help="also write the JSON report here")
    add("--threads", type=int, default=1, help="torch threads (default 1)")
    add("--steps", type=int, help="optimizer steps per model (default 600; quick 4)")
    add("--batch-size", type=int, help="training batch size (default 16; quick 2)")
    add("--train-lengths", type=_ints, help="training chain lengths (default 8,16,32,64)")
    add("--ttt-backbone", choices=("transformer", "mamba"),
        help="the TTT model's backbone (default transformer)")
    add("--lengths", type=_ints, help="evaluated chain lengths (default 8,16,32,64)")
    add("--problems", type=int, help="held-out problems per chain length (default 64; quick 2)")
    add("--bon-length", type=int, help="chain length of the best-of-N problems (default 16)")
    add("--bon-problems", type=int, help="best-of-N problems (default 64; quick 2)")
    add("--bon-ns", type=_ints, help="N of the best-of-N curve (default 1,4,16; quick 1,4)")
    add("--seed", type=int, default=0, help="training and evaluation seed (default 0)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    spec, eval_spec = (QUICK_TRAIN, QUICK_EVAL) if args.quick else (TrainSpec(), EvalSpec())
    train_overrides = {
        "train_steps": args.steps, "batch_size": args.batch_size,
        "train_lengths": args.train_lengths, "ttt_backbone": args.ttt_backbone,
    }
    eval_overrides = {
        "lengths": args.lengths, "problems_per_length": args.problems,
        "bon_length": args.bon_length, "bon_problems": args.bon_problems, "bon_ns": args.bon_ns,
    }
    spec = replace(spec, seed=args.seed, **_given(train_overrides))
    eval_spec = replace(eval_spec, seed=args.seed, **_given(eval_overrides))
    if max(spec.train_lengths + eval_spec.lengths + (eval_spec.bon_length,)) > 64:
        parser.error("chain lengths above 64 do not fit GPT-2's 1024 positions")

    report = run(spec, eval_spec)
    print(format_tables(report))
    line = json.dumps(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main()
