"""Train a PRM (or its ORM baseline) on step-labelled records with transformers' Trainer.

:mod:`~prm.training.examples` turns records into token targets and holds the loss,
:mod:`~prm.training.models` makes the model to train, :mod:`~prm.training.loop` trains it,
and :mod:`~prm.training.pipeline` runs the whole of ``itc-train-prm`` from its config.
"""

from prm.training.examples import (
    IGNORE,
    OBJECTIVES,
    PRMCollator,
    PRMDataset,
    PRMExample,
    build_examples,
    lm_token_probabilities,
    orm_label,
    soft_cross_entropy,
    step_count_summary,
)
from prm.training.loop import PRMTrainer, train
from prm.training.models import (
    BACKBONES,
    TOY_BASES,
    from_pretrained_lm,
    init_model,
    load_tokenizer,
    make_model,
    resolve_base,
)

__all__ = [
    "BACKBONES",
    "IGNORE",
    "OBJECTIVES",
    "PRMCollator",
    "PRMDataset",
    "PRMExample",
    "PRMTrainer",
    "TOY_BASES",
    "build_examples",
    "from_pretrained_lm",
    "init_model",
    "lm_token_probabilities",
    "load_tokenizer",
    "make_model",
    "orm_label",
    "resolve_base",
    "soft_cross_entropy",
    "step_count_summary",
    "train",
]
