"""Long chains of the embedded world: the recipe that trains a policy on them, TTT or GPT-2.

A long-chain problem (``Start at 7 and do A+5 B-3 ... AL-6.``, ``task.LONG_CHAIN``) is solved
one labelled step per operation, in the given order. Finding the next operation is
associative recall: the step repeats the operation's label, and the operation is the token
after that label in the problem, however far back. The rest of a step is local (the previous
step's value, one addition or subtraction).

What the recipe offers to make it learnable within minutes on a CPU (``python -m
evals.long_chains``; what each model learns is in the results log, docs/results/):

* a **curriculum over chain length**: training starts on the shortest chains, where both
  the lookup and the arithmetic are learnt fast, and admits longer ones stage by stage
  (with it GPT-2 learns the lookup; the TTT model has not yet);
* the **Mamba backbone** for TTT: its causal convolution puts the label into the operation
  token's key, so the TTT layer's inner model can store label → operation pairs, the recall its
  inner loop is built for;
* a **larger inner learning rate** (``ttt_base_lr``) than the paper's, so that each stored
  pair moves the small heads' inner weights more.

``policy=toy-ttt`` (configs/policy/toy-ttt.yaml) is the TTT model of :data:`TOY_TTT`, built
through :func:`itc.cache.cached_build` and kept only when it passes :func:`quality_gate`.
This module imports nothing beyond ``itc`` (it is part of the core).
"""

from __future__ import annotations

import inspect
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerBase

from itc.cache import BUILD_INFO, cache_entry, cached_build, fingerprint
from itc.toy import task
from itc.toy.build import (
    ToyPolicySpec,
    build_numerics,
    chat_prompt,
    collate,
    encode_sft_examples,
    model_config,
    warmup_cosine,
)
from itc.toy.tokenizer import OPERATION_TOKENS, build_tokenizer

log = logging.getLogger(__name__)

ARCHITECTURES = ("ttt", "gpt2")


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a trained long-chain policy (its hash keys the cache)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    gpt2_intermediate_size: int = 512
    max_positions: int = 1024  # GPT-2's position table (a 64-step solution is ~880 tokens)
    ttt_backbone: str = "mamba"
    # A hybrid: a causal sliding-window attention over this many tokens beside each TTT layer
    # (TTTConfig.attention_window), for the steps' local copying and arithmetic; 0 for none.
    ttt_window: int = 0
    # The TTT layers' inner base learning rate η_base (TTTConfig.ttt_base_lr; the paper's
    # 1.0 for TTT-Linear). The inner step is η_base·σ(·)/d scaled by 1/i within a mini-batch,
    # so at the paper's value one stored label → operation pair barely moves the inner
    # weights of these small heads (docs/ttt.md).
    ttt_base_lr: float = 32.0
    train_lengths: tuple[int, ...] = (8, 16, 32, 64)
    # Over this first fraction of the steps the longest admitted length grows through
    # ``train_lengths`` in equal stages; then every length is trained, in turn. 0: no
    # curriculum (lengths in turn from the start).
    curriculum_fraction: float = 0.5
    train_steps: int = 1500
    batch_size: int = 8
    learning_rate: float = 3e-3
    # Loss weight of each step's operation token (the recall; the other tokens weigh 1): it
    # is one token in ten, and the one the models at chance had not learnt.
    lookup_weight: float = 1.0
    warmup_steps: int = 30
    decay_fraction: float = 0.3
    seed: int = 0
    num_threads: int = 1


# The toy TTT policy's recipe (policy=toy-ttt); its gate floor is below.
TOY_TTT = TrainSpec()
# The gate: teacher-forced accuracy of the solution tokens on held-out problems of the
# shortest trained length. A build below it has not learnt the steps' format and arithmetic,
# which searches need; the operation lookup is reported but not required (the recipe does
# not learn it yet: docs/ttt.md).
GATE_TOKENS_FLOOR = 0.8
GATE_PROBLEMS = 16
GATE_SEED = 11


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
        attention_window=spec.ttt_window,
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
        config = ttt_config(spec, tokenizer, matched_ttt_intermediate(spec, tokenizer))
        config.ttt_base_lr = spec.ttt_base_lr  # keyed through the spec (policy_entry)
        return config
    raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(ARCHITECTURES)})")


def length_at(spec: TrainSpec, step: int) -> int:
    """The chain length of training batch ``step`` (the curriculum, module docstring)."""
    lengths = spec.train_lengths
    ramp = spec.curriculum_fraction * spec.train_steps
    if step < ramp:
        admitted = 1 + int(step * len(lengths) / ramp)
        return lengths[step % admitted]
    return lengths[step % len(lengths)]


def problems_of_length(
    rng: random.Random, length: int, count: int, split: str = "train"
) -> list[task.ToyProblem]:
    """``count`` long-chain problems of ``length`` operations from ``split``."""
    level = replace(task.LONG_CHAIN, num_ops=length)
    out: list[task.ToyProblem] = []
    while len(out) < count:
        p = task.sample_problem(rng, 0, level)
        if task.is_held_out(p) == (split == "test"):
            out.append(p)
    return out


def encode(tokenizer: PreTrainedTokenizerBase, problems: Sequence[task.ToyProblem]) -> dict:
    """A padded batch of prompt + reference solution, the loss on the solution only."""
    prompts = [chat_prompt(tokenizer, p.text) for p in problems]
    examples = encode_sft_examples(tokenizer, prompts, [p.solution for p in problems])
    return collate(examples, tokenizer.pad_token_id)


def lookup_positions(tokenizer: PreTrainedTokenizerBase, input_ids: torch.Tensor) -> torch.Tensor:
    """Where ``input_ids`` hold an operation token right after a label letter: in a solution,
    each step's operation (its recall; the step's second copy follows a digit)."""
    op_ids = torch.tensor(tokenizer.convert_tokens_to_ids(OPERATION_TOKENS))
    letters = [i for t, i in tokenizer.get_vocab().items() if len(t) == 1 and t.isalpha()]
    after_letter = torch.zeros_like(input_ids, dtype=torch.bool)
    after_letter[:, 1:] = torch.isin(input_ids[:, :-1], torch.tensor(letters))
    return torch.isin(input_ids, op_ids) & after_letter


def training_loss(model, batch: dict, lookup: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The mean next-token loss over solution tokens, ``weight`` on the ``lookup`` ones."""
    if lookup is None or weight == 1.0:
        return model(**batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels.clamp(min=0), reduction="none"
    )
    w = (labels != -100).float() * (1 + (weight - 1) * lookup[:, 1:].float())
    return (losses * w).sum() / w.sum()


def training_batches(
    spec: TrainSpec, tokenizer: PreTrainedTokenizerBase
) -> Iterator[dict[str, torch.Tensor]]:
    """The training batches, the same for every architecture: one chain length per batch
    (little padding), held-out problems skipped."""
    rng = random.Random(spec.seed)
    for step in range(spec.train_steps):
        yield encode(tokenizer, problems_of_length(rng, length_at(spec, step), spec.batch_size))


def train(arch: str, spec: TrainSpec, out_dir: Path) -> dict:
    """Train one policy (AdamW, warmup-stable-decay, clipped gradients) under fixed numerics
    (:func:`itc.toy.build.build_numerics`); save it with the toy tokenizer to ``out_dir``;
    return its stats."""
    with build_numerics(spec.num_threads):
        return _train(arch, spec, out_dir)


def _train(arch: str, spec: TrainSpec, out_dir: Path) -> dict:
    tokenizer = build_tokenizer()
    config = build_config(arch, spec, tokenizer)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)
    sched = warmup_cosine(opt, spec.warmup_steps, spec.train_steps, spec.decay_fraction)
    start = time.time()
    losses: list[float] = []
    for step, batch in enumerate(training_batches(spec, tokenizer)):
        lookup = lookup_positions(tokenizer, batch["input_ids"]) if spec.lookup_weight != 1 else None
        loss = training_loss(model, batch, lookup, spec.lookup_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == spec.train_steps:
            recent = losses[-20:]
            log.info(
                "%s step %d/%d (length %d) loss %.3f (%.0fs)", arch, step + 1, spec.train_steps,
                length_at(spec, step), sum(recent) / len(recent), time.time() - start,
            )
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-max(1, min(40, len(losses) // 4)) :]
    return {
        "architecture": arch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(time.time() - start, 1),
        "final_loss": round(sum(tail) / len(tail), 4),
        "loss_curve": [
            round(sum(part) / len(part), 4)
            for part in (losses[i * len(losses) // 10 : (i + 1) * len(losses) // 10] for i in range(10))
            if part
        ],
    }


@torch.no_grad()
def teacher_forced(model, tokenizer: PreTrainedTokenizerBase, problems: Sequence[task.ToyProblem]) -> dict:
    """One forward pass over prompt + reference solution, per problem: whether every solution
    token is the model's argmax (then greedy decoding writes the reference), the fraction of
    solution tokens that are, the fraction of
    operation tokens inside steps that are right (the long-range lookup), and the token
    losses of the solution in order (for loss-by-position curves)."""
    batch = encode(tokenizer, problems)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
    mask = labels != -100
    pred = logits.argmax(-1)
    loss = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
    )
    op_ids = torch.tensor(tokenizer.convert_tokens_to_ids(OPERATION_TOKENS))
    out = []
    for i in range(len(problems)):
        m = mask[i]
        lab, prd = labels[i][m], pred[i][m]
        # each step "B-3 12-3=9" holds its operation twice: first the lookup, then a copy
        step_ops = torch.isin(lab, op_ids).nonzero().flatten()[::2]
        out.append({
            "exact": bool((lab == prd).all()),
            "tokens": float((lab == prd).float().mean()),
            "ops": float((lab[step_ops] == prd[step_ops]).float().mean()) if len(step_ops) else 1.0,
            "losses": loss[i][m].tolist(),
        })
    return out


def quality_gate(model_dir: Path, spec: TrainSpec, floor: float = GATE_TOKENS_FLOOR) -> dict:
    """Teacher-forced figures of the model in ``model_dir`` on ``GATE_PROBLEMS`` held-out
    problems per trained length, and whether its token accuracy at the shortest length
    reaches ``floor``."""
    tokenizer = build_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rng = random.Random(GATE_SEED)
    by_length = {}
    with build_numerics(spec.num_threads):
        for length in spec.train_lengths:
            rows = teacher_forced(model, tokenizer, problems_of_length(rng, length, GATE_PROBLEMS, "test"))
            by_length[str(length)] = {
                key: round(sum(r[key] for r in rows) / len(rows), 4) for key in ("tokens", "ops", "exact")
            }
    tokens = by_length[str(min(spec.train_lengths))]["tokens"]
    return {
        "metric": f"teacher-forced solution-token accuracy at {min(spec.train_lengths)} operations, "
        f"{GATE_PROBLEMS} held-out problems (seed {GATE_SEED})",
        "tokens": tokens,
        "by_length": by_length,
        "floor": floor,
        "passed": tokens >= floor,
    }


class BuildQualityError(RuntimeError):
    """A long-chain build stayed below its quality floor."""


def _code_fingerprint(arch: str) -> str:
    """The code a trained model depends on: the toy task, tokenizer and encoding, this
    module's model and training functions, and for TTT the backbone's source."""
    toy = Path(task.__file__).parent
    parts: list[str | bytes] = [
        (toy / name).read_bytes() for name in ("task.py", "tokenizer.py", "build.py")
    ]
    functions = (
        gpt2_config, ttt_config, matched_ttt_intermediate, length_at, problems_of_length, encode,
        lookup_positions, training_loss, training_batches, _train,
    )
    parts += [inspect.getsource(f) for f in functions]
    if arch == "ttt":
        import itc.ttt

        parts += [p.read_bytes() for p in sorted(Path(itc.ttt.__file__).parent.glob("*.py"))]
    return fingerprint(*parts)


def policy_entry(arch: str, spec: TrainSpec) -> Path:
    """Where the cache keeps the long-chain ``arch`` policy of ``spec`` (built or not)."""
    fields = asdict(spec)
    if arch != "ttt":  # so a TTT variant reuses the cached transformer
        del fields["ttt_backbone"], fields["ttt_window"], fields["ttt_base_lr"]
    key = (json.dumps(fields, sort_keys=True), arch, _code_fingerprint(arch))
    return cache_entry(f"toy/long-chain-{arch}", key)


def policy_path(arch: str, spec: TrainSpec, gate_floor: float | None = None) -> Path:
    """The cached long-chain ``arch`` policy, trained first when it is missing
    (:func:`itc.cache.cached_build`). Every build records :func:`quality_gate`'s figures in
    its ``build_info.json``; with ``gate_floor`` a build below that floor is not cached, and a
    cached one below it (built without a floor) is refused: :class:`BuildQualityError`."""

    def check(gate: dict | None) -> None:
        if gate_floor is not None and (gate is None or gate["tokens"] < gate_floor):
            if gate is None:
                raise BuildQualityError(f"the long-chain {arch} build in the cache was never gated")
            raise BuildQualityError(
                f"the long-chain {arch} build failed its quality gate: {gate['metric']} "
                f"{gate['tokens']:.3f} is below the floor {gate_floor:.2f}"
            )

    def build(tmp: Path) -> None:
        stats = train(arch, spec, tmp)
        gate = quality_gate(tmp, spec, GATE_TOKENS_FLOOR if gate_floor is None else gate_floor)
        check(gate)
        info = {"spec": asdict(spec), **stats, "quality_gate": gate}
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2))

    what = f"the long-chain {arch} policy ({spec.train_steps} steps)"
    path = cached_build(policy_entry(arch, spec), build, what=what)
    check(json.loads((path / BUILD_INFO).read_text()).get("quality_gate"))
    return path


def toy_ttt_path() -> Path:
    """``policy.model=toy-ttt``: the cached toy TTT policy, built and gated first if missing."""
    return policy_path("ttt", TOY_TTT, gate_floor=GATE_TOKENS_FLOOR)
