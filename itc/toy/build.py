"""Build (train) the embedded world's tiny policy on the CPU and cache it on disk.

The policy is a GPT-2-architecture causal LM (2 layers, hidden 128, two heads of size 64,
which vLLM's CPU attention accepts), trained on reference solutions of training-split
problems. It learns the format quickly and the arithmetic only partly, so sampled
solutions make genuine wrong steps that test-time compute can fix.

The training loop is a plain PyTorch loop rather than transformers' Trainer: it is a few
lines, runs a fixed number of steps deterministically, and avoids Trainer's start-up cost
inside the build's small time budget.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from filelock import FileLock
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from itc.cache import cache_dir, fingerprint
from itc.toy import task
from itc.toy.tokenizer import build_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyPolicySpec:
    """Everything that determines the built policy (its hash keys the cache)."""

    # "gpt2" (learned absolute positions) or "qwen2" (RoPE). With a fixed prompt layout the
    # next operation sits at a fixed absolute position, a lookup GPT-2's position table
    # learns in minutes; with RoPE it needs an induction head, which 2 layers form far less
    # well within the build budget, most of all at levels 3-5 (`itc-build-toy --architecture
    # qwen2 --evaluate` against `itc-build-toy --evaluate`; figures: docs/results/).
    architecture: str = "gpt2"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 1024
    train_steps: int = 1300
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    seed: int = 0


def model_config(spec: ToyPolicySpec, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    special = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if spec.architecture == "gpt2":
        return GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=spec.max_position_embeddings,
            n_embd=spec.hidden_size,
            n_layer=spec.num_layers,
            n_head=spec.num_heads,
            n_inner=spec.intermediate_size,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **special,
        )
    if spec.architecture == "qwen2":
        return Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_heads,
            max_position_embeddings=spec.max_position_embeddings,
            rope_theta=10000.0,
            **special,
        )
    raise ValueError(f"unknown toy architecture {spec.architecture!r} (gpt2 or qwen2)")


def chat_prompt(tokenizer: PreTrainedTokenizerBase, problem: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True
    )


def encode_sft_examples(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], completions: list[str]
) -> list[tuple[list[int], list[int]]]:
    """Token ids and labels (-100 on the prompt) for each prompt + completion + EOS, encoded
    in one batched call per side (the same ids as one call per string, with less overhead)."""
    eos = [tokenizer.eos_token_id]
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    return [(p + c + eos, [-100] * len(p) + c + eos) for p, c in zip(prompt_ids, completion_ids)]


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def warmup_cosine(
    opt: torch.optim.Optimizer, warmup_steps: int, train_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then cosine decay to 5% of the peak (transformers' cosine schedule
    starts its warmup at 0 and decays to 0; the toy builds were tuned with this one)."""

    def lr_at(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        frac = (step - warmup_steps) / max(1, train_steps - warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def train_policy(spec: ToyPolicySpec, out_dir: Path, progress: bool = True) -> dict:
    """Train the tiny policy and save model + tokenizer to ``out_dir``; returns stats."""
    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    tokenizer = build_tokenizer()
    model = AutoModelForCausalLM.from_config(model_config(spec, tokenizer))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=0.01)

    sched = warmup_cosine(opt, spec.warmup_steps, spec.train_steps)
    start = time.time()
    losses: list[float] = []
    bar = tqdm(range(spec.train_steps), desc="training toy policy", disable=not progress)
    for step in bar:
        # One level per batch keeps padding (and so wasted compute) low.
        level = spec.levels[step % len(spec.levels)]
        problems = []
        while len(problems) < spec.batch_size:
            p = task.sample_problem(rng, level)
            if not task.is_held_out(p):
                problems.append(p)
        batch = encode_sft_examples(
            tokenizer, [chat_prompt(tokenizer, p.text) for p in problems], [p.solution for p in problems]
        )
        out = model(**collate(batch, tokenizer.pad_token_id))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "train_seconds": round(time.time() - start, 1),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def _source_fingerprint() -> str:
    here = Path(__file__).parent
    sources = [(here / name).read_bytes() for name in ("task.py", "tokenizer.py", "build.py")]
    return fingerprint(*sources)


def policy_path(spec: ToyPolicySpec | None = None, progress: bool = True) -> Path:
    """The cached toy policy folder, building it first if it is missing.

    The cache key covers the spec and this package's source, so a change to the task,
    tokenizer or training code triggers a rebuild. A lock file keeps two processes
    from building at once; the build is written to a temporary folder and renamed.
    """
    spec = spec or ToyPolicySpec()
    key = fingerprint(json.dumps(asdict(spec), sort_keys=True), _source_fingerprint())
    root = cache_dir() / "toy"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"policy-{key}"
    with FileLock(str(root / f"policy-{key}.lock")):
        if (final / "build_info.json").exists():
            return final
        log.warning("Building the embedded world's toy policy (once; cached in %s)", final)
        tmp = root / f"policy-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        stats = train_policy(spec, tmp, progress=progress)
        (tmp / "build_info.json").write_text(
            json.dumps({"spec": asdict(spec), **stats}, indent=2)
        )
        tmp.rename(final)
    return final
