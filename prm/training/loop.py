"""The PRM training loop: transformers' ``Trainer`` with the soft cross-entropy."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

from prm.data import StepLabelled
from prm.scoring.formats import PRMFormat
from prm.training.examples import IGNORE, PRMCollator, PRMDataset, build_examples, soft_cross_entropy

log = logging.getLogger(__name__)

class PRMTrainer(Trainer):
    """``Trainer`` with the soft cross-entropy over score positions."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = soft_cross_entropy(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss


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
