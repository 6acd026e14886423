"""Long chains of thought on the embedded world: a TTT policy against a transformer policy.

    python -m evals.long_chains [--quick] [--out FILE] [--threads N]

Trains two policies from scratch on the CPU with the same data, batches, optimizer and number
of steps (the recipe ``itc.toy.long_chain.TrainSpec``: a curriculum over chain length,
optionally a loss weight on the lookup tokens), on the toy world's long chains
(``Start at 7 and do A+5 B-3 ... AL-6.``: one step per operation, additions and subtractions
only, 8 to 64 operations, so two-letter labels appear past 52; one chain length per batch):

* TTT: ``TTTForCausalLM`` with TTT-Linear layers in the Mamba backbone (``--ttt-backbone
  transformer`` for the other; ``--window W`` for the hybrid with sliding-window attention);
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
  each with its 95% bootstrap interval over problems, and the chance accuracy (the
  commonest answer's share);
* best-of-N with the TTT policy: N samples per problem of one chain length at temperature
  0.8; majority-vote accuracy and pass@N (some sample right) over the first N samples;
* for both models, the teacher-forced loss of the solution tokens against their position on
  held-out chains of the longest length (``LOSS_BUCKET``-token buckets).

Prints the tables, then one JSON object of all figures as the last line (also written to
``--out``), and writes them to the results log (docs/results/) unless ``--quick`` or
``--no-log``. Threads default to 1, the setting the default budget is sized for.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

from itc.stats import bootstrap_mean, rounded
from itc.toy import long_chain, task
from itc.toy.long_chain import ARCHITECTURES, TrainSpec, policy_path
from itc.toy.tokenizer import build_tokenizer

log = logging.getLogger(__name__)

LABELS = {"ttt": "TTT-Linear", "gpt2": "GPT-2"}
STEP_METRICS = ("accuracy", "on_track", "steps", "ops", "arithmetic")
LOSS_BUCKET = 64  # solution tokens per point of the loss-by-position curve


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
    loss_problems: int = 32  # held-out problems of the longest length for the loss curves
    seed: int = 0


QUICK_TRAIN = TrainSpec(
    hidden_size=32, num_layers=1, gpt2_intermediate_size=64, train_steps=4, batch_size=2,
    warmup_steps=1,
)
QUICK_EVAL = EvalSpec(problems_per_length=2, bon_problems=2, bon_ns=(1, 4), loss_problems=2)


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


def chance_accuracy(problems: Sequence[task.ToyProblem]) -> float:
    """The accuracy of the best constant guess: the commonest answer's share (chance level)."""
    counts: dict[int, int] = {}
    for p in problems:
        counts[p.answer] = counts.get(p.answer, 0) + 1
    return max(counts.values()) / len(problems)


def greedy_by_length(policy, eval_spec: EvalSpec) -> dict[str, dict]:
    """Greedy figures per chain length on held-out problems, each with its 95% bootstrap
    interval over problems (``<metric>_ci``), and the chance accuracy."""
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
        row: dict = {}
        for key in STEP_METRICS:
            values = [g[key] for g in graded]
            row[key] = sum(values) / len(values)
            row[f"{key}_ci"] = rounded(bootstrap_mean(values))
        row["chance"] = chance_accuracy(problems)
        row["above_chance"] = row["accuracy_ci"][0] > row["chance"]
        row["mean_tokens"] = sum(c[0].num_tokens for c in completions) / len(completions)
        row["problems"] = len(problems)
        out[str(length)] = row
        log.info("%s greedy, %d steps: %s", policy.name, length, row)
    return out


@torch.no_grad()
def loss_by_position(path: Path, eval_spec: EvalSpec, length: int) -> list[float]:
    """Teacher-forced loss per solution token against its position, averaged over
    ``LOSS_BUCKET``-token buckets, on held-out problems of ``length`` operations: does the loss
    keep falling at later positions (the TTT paper's key figure)?"""
    tokenizer = build_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    problems = task.generate(
        eval_spec.loss_problems, seed=eval_spec.seed + 2, levels=(1,), split="test",
        long_chain_steps=length,
    )
    sums: list[float] = []
    counts: list[int] = []
    for start in range(0, len(problems), 8):
        for row in long_chain.teacher_forced(model, tokenizer, problems[start : start + 8]):
            for i, loss in enumerate(row["losses"]):
                b = i // LOSS_BUCKET
                if b == len(sums):
                    sums.append(0.0)
                    counts.append(0)
                sums[b] += loss
                counts[b] += 1
    return [round(s / c, 4) for s, c in zip(sums, counts)]


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
        "loss_by_position": {"length": max(eval_spec.lengths), "bucket": LOSS_BUCKET},
    }
    for arch in ARCHITECTURES:
        path = policy_path(arch, spec)
        info = json.loads((path / "build_info.json").read_text())
        t0 = time.time()
        policy = load_policy(path, spec, eval_spec, seed=eval_spec.seed)
        report["by_length"][arch] = greedy_by_length(policy, eval_spec)
        if arch == "ttt":
            report["best_of_n"] = best_of_n(policy, eval_spec)
        del policy
        report["loss_by_position"][arch] = loss_by_position(path, eval_spec, max(eval_spec.lengths))
        report["models"][arch] = {
            "parameters": info["parameters"],
            "train_seconds": info["train_seconds"],
            "final_loss": info["final_loss"],
            "eval_seconds": round(time.time() - t0, 1),
            "path": str(path),
        }
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
            cells = [_with_ci(r, key) for key in STEP_METRICS] + [f"{r['mean_tokens']:.0f}"]
            lines.append(f"| {length} | {r['problems']} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "chance accuracy (the commonest answer): "
            + ", ".join(f"{length}: {r['chance']:.3f}" for length, r in rows.items())
        )
    curves = report.get("loss_by_position", {})
    archs = [a for a in ARCHITECTURES if a in curves]
    if archs:
        lines += [
            "",
            (
                f"teacher-forced loss by solution position ({curves['length']} operations, "
                f"{curves['bucket']}-token buckets)"
            ),
            "",
            "| tokens | " + " | ".join(LABELS[a] for a in archs) + " |",
            "|---" * (len(archs) + 1) + "|",
        ]
        for b in range(max(len(curves[a]) for a in archs)):
            cells = [f"{curves[a][b]:.3f}" if b < len(curves[a]) else "" for a in archs]
            lo = b * curves["bucket"]
            lines.append(f"| {lo}-{lo + curves['bucket'] - 1} | " + " | ".join(cells) + " |")
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


def _with_ci(row: dict, key: str) -> str:
    ci = row.get(f"{key}_ci")
    return f"{row[key]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


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
    add("--steps", type=int, help=f"optimizer steps per model (default {TrainSpec.train_steps}; quick 4)")
    add("--batch-size", type=int, help="training batch size (default 16; quick 2)")
    add("--lr", type=float, help=f"peak learning rate (default {TrainSpec.learning_rate})")
    add("--train-lengths", type=_ints, help="training chain lengths (default 8,16,32,64)")
    add("--curriculum", type=float,
        help="fraction of the steps over which longer chains are admitted stage by stage "
        f"(default {TrainSpec.curriculum_fraction}; 0: all lengths from the start)")
    add("--lookup-weight", type=float,
        help=f"loss weight of each step's operation token, the recall (default {TrainSpec.lookup_weight})")
    add("--ttt-backbone", choices=("transformer", "mamba"),
        help=f"the TTT model's backbone (default {TrainSpec.ttt_backbone})")
    add("--ttt-base-lr", type=float,
        help=f"the TTT layers' inner base learning rate (default {TrainSpec.ttt_base_lr}; the paper's 1.0)")
    add("--window", type=int,
        help="hybrid: sliding-window attention of this many tokens beside each TTT layer "
        f"(default {TrainSpec.ttt_window}; 0: none)")
    add("--lengths", type=_ints, help="evaluated chain lengths (default 8,16,32,64)")
    add("--problems", type=int, help="held-out problems per chain length (default 64; quick 2)")
    add("--bon-length", type=int, help="chain length of the best-of-N problems (default 16)")
    add("--bon-problems", type=int, help="best-of-N problems (default 64; quick 2)")
    add("--bon-ns", type=_ints, help="N of the best-of-N curve (default 1,4,16; quick 1,4)")
    add("--seed", type=int, default=0, help="training and evaluation seed (default 0)")
    add("--no-log", action="store_true",
        help="do not write a results-log entry (docs/results/; never written for --quick)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    spec, eval_spec = (QUICK_TRAIN, QUICK_EVAL) if args.quick else (TrainSpec(), EvalSpec())
    train_overrides = {
        "train_steps": args.steps, "batch_size": args.batch_size,
        "train_lengths": args.train_lengths, "ttt_backbone": args.ttt_backbone,
        "learning_rate": args.lr, "curriculum_fraction": args.curriculum,
        "lookup_weight": args.lookup_weight, "ttt_window": args.window,
        "ttt_base_lr": args.ttt_base_lr,
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
    tables = format_tables(report)
    print(tables)
    if not (args.quick or args.no_log):
        from itc.results_log import write_entry

        body = tables + "\n\n```json\n" + json.dumps(report, indent=1) + "\n```"
        print(f"results log: {write_entry('Long chains: TTT against GPT-2', body)}", file=sys.stderr)
    line = json.dumps(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(line + "\n")
    print(line)
    return report


if __name__ == "__main__":
    main()
