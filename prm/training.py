"""Train a PRM (or its ORM baseline) on step-labelled records with transformers' Trainer.

Inputs are built by the same :class:`~prm.scoring.formats.PRMFormat` that scores at serving
time, so training and scoring read exactly the same positions (TRL's ``PRMTrainer`` places
labels on step-separator tokens without a chat template, which is not the layout of
Qwen2.5-Math-PRM; that is why we do not use it). A label goes on each step's score position,
every other token is ignored; soft labels in [0, 1] (automatic Math-Shepherd estimates) are
trained with a soft cross-entropy, hard labels with the ordinary one.

Objectives:

- ``prm``: every step carries its label.
- ``orm``: only the last step, labelled with whether the final answer is right (the outcome
  reward model "Let's Verify Step by Step" compares PRMs against). Score it with ``last``.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import (
    AutoModelForTokenClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Trainer,
)

from itc.grading import answers_equivalent, extract_boxed
from prm.data import StepLabelled
from prm.readout import build_lm_verifier, init_previous_token_head
from prm.scoring.formats import PRMFormat
from prm.scoring.modeling import Qwen2ForProcessRewardModel

log = logging.getLogger(__name__)

OBJECTIVES = ("prm", "orm")
IGNORE = -100.0


def orm_label(record: StepLabelled) -> float:
    """Whether the record's final answer is right: graded against its gold answer when both
    exist, else whether its last step is labelled good."""
    answer = extract_boxed(record.steps[-1])
    if record.gold_answer is not None and answer is not None:
        return float(answers_equivalent(answer, record.gold_answer))
    return float(record.labels[-1] >= 0.5)


@dataclass
class PRMExample:
    input_ids: list[int]
    labels: list[float]  # IGNORE except at score positions


def build_examples(
    records: Sequence[StepLabelled],
    tokenizer: PreTrainedTokenizerBase,
    format: PRMFormat,
    objective: str = "prm",
    max_length: int | None = None,
    dense_toy_labels: bool = False,
    token_hints: Callable[[Sequence[Sequence[int]]], list[list[float]]] | None = None,
    hint_weight: float = 0.0,
) -> tuple[list[PRMExample], int]:
    """Token ids and per-token targets for each record; returns (examples, skipped).

    Records longer than ``max_length`` tokens are skipped (and counted), not truncated: a
    truncated record would lose the labels of its last steps silently. With
    ``dense_toy_labels`` (objective ``prm``), embedded-world records also get a label at every
    token of their steps (:func:`prm.data.toy.token_targets`); scores are still read at the
    step tags only. ``token_hints`` (:func:`lm_token_probabilities`) blends a base LM's
    probability of each token into those dense targets with ``hint_weight``.
    """
    from prm.data.toy import token_targets

    pieces: dict[int, str] = {}

    def decode(token_id: int) -> str:
        if token_id not in pieces:
            pieces[token_id] = tokenizer.decode([token_id])
        return pieces[token_id]

    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    examples, skipped = [], 0
    encoded = []
    for rec in records:
        enc = format.encode(tokenizer, rec.problem, rec.steps)
        if max_length is not None and len(enc.input_ids) > max_length:
            skipped += 1
            continue
        encoded.append((rec, enc))
    hints: list[list[float] | None] = [None] * len(encoded)
    if dense_toy_labels and token_hints is not None and hint_weight and objective == "prm":
        toy = [k for k, (rec, _) in enumerate(encoded) if rec.source == "toy"]
        for k, probs in zip(toy, token_hints([encoded[k][1].input_ids for k in toy])):
            hints[k] = probs
    for (rec, enc), hint in zip(encoded, hints):
        targets = [IGNORE] * len(enc.input_ids)
        if objective == "prm":
            for pos, label in zip(enc.positions, rec.labels):
                targets[pos] = label
            if dense_toy_labels and rec.source == "toy":
                dense = token_targets(rec, enc.input_ids, enc.positions, decode, hint, hint_weight)
                for pos, label in dense.items():
                    if targets[pos] == IGNORE:
                        targets[pos] = label
        else:
            targets[enc.positions[-1]] = orm_label(rec)
        examples.append(PRMExample(enc.input_ids, targets))
    if skipped:
        log.warning("skipped %d records longer than %s tokens", skipped, max_length)
    return examples, skipped


def lm_token_probabilities(
    model: PreTrainedModel, batch_size: int = 64
) -> Callable[[Sequence[Sequence[int]]], list[list[float]]]:
    """A function giving, for each sequence of token ids, the causal LM's probability of
    every token given those before it (1.0 for the first)."""

    def probabilities(sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        out: list[list[float]] = [[] for _ in sequences]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        model.eval()
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                width = max(len(sequences[i]) for i in idx)
                ids = torch.zeros((len(idx), width), dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : len(sequences[i])] = torch.tensor(sequences[i])
                    mask[row, : len(sequences[i])] = 1
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
                token = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0].exp()
                for row, i in enumerate(idx):
                    out[i] = [1.0] + token[row, : len(sequences[i]) - 1].tolist()
        return out

    return probabilities


class PRMDataset(Dataset):
    def __init__(self, examples: Sequence[PRMExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list]:
        e = self.examples[i]
        return {"input_ids": e.input_ids, "labels": e.labels}


@dataclass
class PRMCollator:
    """Right-pads a batch; targets are float (soft labels), -100 where ignored."""

    pad_token_id: int

    def __call__(self, batch: list[dict[str, list]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.float)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            mask[i, :n] = 1
            labels[i, :n] = torch.tensor(b["labels"], dtype=torch.float)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over labelled positions of the cross-entropy against (1 - p, p).

    ``logits``: [..., 2]; ``targets``: [...] with p in [0, 1], or -100 to ignore. For hard
    targets this is the ordinary cross-entropy.
    """
    keep = targets != IGNORE
    logp = torch.log_softmax(logits[keep].float(), dim=-1)
    p = targets[keep]
    if p.numel() == 0:
        return logits.sum() * 0.0
    return -(p * logp[:, 1] + (1 - p) * logp[:, 0]).mean()


class PRMTrainer(Trainer):
    """``Trainer`` with the soft cross-entropy over score positions."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = soft_cross_entropy(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss


BACKBONES = ("qwen2", "ttt")


def init_model(
    backbone: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int = 2048,
    ttt_layer_type: str = "linear",
    seed: int = 0,
) -> PreTrainedModel:
    """A freshly initialised PRM with a 2-class head: the Qwen2.5-Math-PRM layout on a Qwen2
    backbone (servable by vLLM), or a TTT backbone (linear-time scoring; transformers only)."""
    torch.manual_seed(seed)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if backbone == "qwen2":
        config = Qwen2Config(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_position_embeddings,
            num_labels=2,
            tie_word_embeddings=False,
            **ids,
        )
        return Qwen2ForProcessRewardModel(config)
    if backbone == "ttt":
        from itc.ttt import TTTConfig, TTTForProcessRewardModel

        config = TTTConfig(
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            ttt_layer_type=ttt_layer_type,
            num_labels=2,
            **ids,
        )
        return TTTForProcessRewardModel(config)
    raise ValueError(f"backbone={backbone!r} is not one of {', '.join(BACKBONES)}")


def from_pretrained_lm(
    path: str,
    trust_remote_code: bool = False,
    extra_layers: int = 0,
    freeze_base: bool = False,
    previous_token_head: bool = False,
    lm_verifier: bool = False,
    solution_start_id: int | None = None,
    step_tag_id: int | None = None,
    freeze_new_layers: bool = False,
) -> PreTrainedModel:
    """A PRM initialised from a causal LM checkpoint: a Qwen2 LM becomes the
    Qwen2.5-Math-PRM layout (backbone kept, new head); another architecture gets
    transformers' token-classification head with 2 labels.

    ``extra_layers`` (Qwen2 only) stacks freshly initialised layers on the LM's: at each
    token they can read the LM's last-layer state of the token before, i.e. its prediction
    of this token, which is what checking a step needs (a tiny LM cannot pass its own
    prediction on within its own depth). ``previous_token_head`` starts the first of them as
    the head that does that (:func:`prm.readout.init_previous_token_head`). ``lm_verifier``
    instead starts the new layers (at least 3) and the head as the LM's own verifier, at twice
    the LM's width (:func:`prm.readout.build_lm_verifier`); ``solution_start_id`` is the token
    that opens the solution in the PRM's input, ``step_tag_id`` the step tag's token.
    ``freeze_new_layers`` trains only the head (and the final norm) on top of them.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if config.model_type == "qwen2":
        config.num_labels = 2
        config.architectures = ["Qwen2ForProcessRewardModel"]
        base_layers = config.num_hidden_layers
        if extra_layers:
            config.num_hidden_layers += extra_layers
            if getattr(config, "layer_types", None):
                config.layer_types = list(config.layer_types) + [config.layer_types[-1]] * extra_layers
        model = Qwen2ForProcessRewardModel.from_pretrained(path, config=config)
        if previous_token_head and not extra_layers:
            raise ValueError("model.previous_token_head needs model.extra_layers >= 1")
        if lm_verifier:
            if solution_start_id is None:
                raise ValueError("model.lm_verifier needs the id of the token that opens the solution")
            model = build_lm_verifier(model, base_layers, solution_start_id, step_tag_id)
        elif previous_token_head:
            init_previous_token_head(model, base_layers)
        if freeze_base:
            for module in [model.model.embed_tokens, *model.model.layers[:base_layers]]:
                module.requires_grad_(False)
        if freeze_new_layers:
            for module in model.model.layers[base_layers:]:
                module.requires_grad_(False)
        return model
    if extra_layers or freeze_base or previous_token_head or lm_verifier or freeze_new_layers:
        raise ValueError(
            "model.extra_layers, model.freeze_base, model.freeze_new_layers, model.previous_token_head "
            "and model.lm_verifier need a Qwen2 "
            f"base, not {config.model_type!r}"
        )
    return AutoModelForTokenClassification.from_pretrained(
        path, num_labels=2, trust_remote_code=trust_remote_code
    )


def step_count_summary(records: Sequence[StepLabelled]) -> dict[str, Any]:
    steps = sum(len(r.steps) for r in records)
    good = sum(x >= 0.5 for r in records for x in r.labels)
    return {
        "records": len(records),
        "steps": steps,
        "good_step_fraction": round(good / steps, 4) if steps else math.nan,
        "solutions_all_good": sum(all(x >= 0.5 for x in r.labels) for r in records),
    }


def load_tokenizer(name: str | None, base: str | None, trust_remote_code: bool = False):
    """``toy`` = the embedded world's tokenizer; else a path or hub id (default: the base's)."""
    if name == "toy" or (name is None and base is None):
        from itc.toy.tokenizer import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name or base, trust_remote_code=trust_remote_code)


# Base LMs of the embedded world: name -> the build of the toy LM trained on reference
# solutions (itc.toy.build, cached). A PRM starts from an LM of the policy's family, as
# Qwen2.5-Math-PRM starts from Qwen2.5-Math. toy-qwen2-4k trains 4,000 steps instead of
# 1,300, so it takes about three times as long to build; its own token probabilities find
# first errors better (python -m evals.lm_verifier --lm toy-qwen2-4k against --lm toy-qwen2;
# a PRM built on it: itc-train-prm name=verif4k model.base=toy-qwen2-4k, then itc-eval-prm
# prm.model=<its checkpoint>; figures in the results log, docs/results/). The longer build
# is why it is not the default.
TOY_BASES = {
    "toy-qwen2": {"architecture": "qwen2", "train_steps": 1300},
    "toy-qwen2-4k": {"architecture": "qwen2", "train_steps": 4000},
}


def resolve_base(base: str) -> str:
    """``toy-qwen2`` (or ``toy-qwen2-4k``) names an embedded world's Qwen2 LM (built on first
    use, with a progress bar); any other name or path is kept."""
    if base in TOY_BASES:
        from itc.toy.build import ToyPolicySpec, policy_path

        return str(policy_path(ToyPolicySpec(**TOY_BASES[base]), progress=True))
    return base


def _token_id(tokenizer: PreTrainedTokenizerBase, token: str | None, key: str) -> int:
    ids = tokenizer(token or "", add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"{key}={token!r} is not one token of the tokenizer (it gives {ids}); "
            "model.lm_verifier needs the solution's opening token and the step tag as single tokens"
        )
    return ids[0]


def make_model(
    m: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int, step_tag: str | None = None
) -> PreTrainedModel:
    """The model to train from the ``model`` config: a base causal LM, or a fresh backbone.
    ``step_tag`` is the scoring format's step tag (``model.lm_verifier`` uses it)."""
    torch.manual_seed(seed)  # the new head's initialisation
    if m.get("base"):
        return from_pretrained_lm(
            resolve_base(m["base"]),
            m.get("trust_remote_code", False),
            m.get("extra_layers", 0),
            m.get("freeze_base", False),
            m.get("previous_token_head", False),
            m.get("lm_verifier", False),
            _token_id(tokenizer, m.get("solution_start_token"), "model.solution_start_token") if m.get("lm_verifier") else None,
            _token_id(tokenizer, step_tag, "format.step_tag") if m.get("lm_verifier") and step_tag else None,
            m.get("freeze_new_layers", False),
        )
    return init_model(
        m["backbone"],
        tokenizer,
        hidden_size=m["hidden_size"],
        num_layers=m["num_layers"],
        num_heads=m["num_heads"],
        intermediate_size=m["intermediate_size"],
        max_position_embeddings=m["max_position_embeddings"],
        ttt_layer_type=m.get("ttt_layer_type", "linear"),
        seed=seed,
    )


def train(
    records: Sequence[StepLabelled],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    format: PRMFormat,
    output_dir: str | Path,
    training_args: dict[str, Any],
    objective: str = "prm",
    max_length: int | None = None,
    run_key: str = "",
    dense_toy_labels: bool = False,
    token_hints: Callable[[Sequence[Sequence[int]]], list[list[float]]] | None = None,
    hint_weight: float = 0.0,
) -> dict[str, Any]:
    """Train ``model`` on ``records`` and save it (with the tokenizer) to
    ``output_dir/checkpoint``, written to a temporary folder and renamed into place.

    Trainer checkpoints go to ``output_dir/trainer``; an interrupted run with the same
    ``run_key`` (a fingerprint of its settings) resumes from the newest one, while one with
    other settings starts afresh. Returns a summary of the data and the final loss.
    """
    from transformers import TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(output_dir)
    examples, skipped = build_examples(
        records, tokenizer, format, objective, max_length, dense_toy_labels, token_hints, hint_weight
    )
    if not examples:
        raise ValueError("no training examples: the data mix is empty (see data.* in the config)")
    trainer_dir = output_dir / "trainer"
    key_file = trainer_dir / "run_key.txt"
    if trainer_dir.is_dir() and (not key_file.exists() or key_file.read_text() != run_key):
        log.warning("discarding %s: it was written by a run with other settings", trainer_dir)
        shutil.rmtree(trainer_dir)
    trainer_dir.mkdir(parents=True, exist_ok=True)
    key_file.write_text(run_key)
    args = TrainingArguments(
        output_dir=str(trainer_dir),
        remove_unused_columns=False,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        **training_args,
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = PRMTrainer(
        model=model,
        args=args,
        train_dataset=PRMDataset(examples),
        data_collator=PRMCollator(pad),
        processing_class=tokenizer,
    )
    last = get_last_checkpoint(str(trainer_dir))
    if last:
        log.warning("resuming PRM training from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    final = output_dir / "checkpoint"
    tmp = output_dir / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    shutil.rmtree(trainer_dir, ignore_errors=True)  # the finished model supersedes them
    return {
        "objective": objective,
        "examples": len(examples),
        "skipped_too_long": skipped,
        "labelled_positions": sum(sum(x != IGNORE for x in e.labels) for e in examples),
        "train_loss": round(result.training_loss, 5),
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint": str(final),
    }
