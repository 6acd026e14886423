"""PRM training examples and their loss.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from itc.grading import answers_equivalent, extract_boxed
from prm.data import StepLabelled
from prm.scoring.formats import PRMFormat

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


def step_count_summary(records: Sequence[StepLabelled]) -> dict[str, Any]:
    steps = sum(len(r.steps) for r in records)
    good = sum(x >= 0.5 for r in records for x in r.labels)
    return {
        "records": len(records),
        "steps": steps,
        "good_step_fraction": round(good / steps, 4) if steps else math.nan,
        "solutions_all_good": sum(all(x >= 0.5 for x in r.labels) for r in records),
    }
