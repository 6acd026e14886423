"""PRM training data: one step-labelled record type, loaders, JSONL and TRL export.

- :class:`StepLabelled`: problem, steps, per-step labels in [0, 1] (hard: 1.0 good / 0.0 bad
  after the neutral policy; soft: fraction of good rollouts), gold answer, source, meta.
- :func:`load_prm800k`, :func:`load_math_shepherd`, :func:`load_processbench`, :func:`read_jsonl` return a
  :class:`LoadResult` (``records``, ``skipped``, ``skipped_where``, ``excluded``; it iterates
  and indexes like its record list). Malformed records raise :class:`PRMDataError`
  (``file:line: reason``) unless ``skip_bad=True``, which counts them, lists where, and logs
  a warning per file.
- :func:`write_jsonl` (atomic), :func:`to_trl` / :func:`export_trl`: TRL's PRM rows
  ``{"prompt", "completions", "labels": [bool]}``, a label True when >= 0.5.
"""

from prm.data.math_shepherd import TAG, load_math_shepherd, parse_math_shepherd
from prm.data.processbench import load_processbench
from prm.data.prm800k import NEUTRAL_POLICIES, load_prm800k
from prm.data.records import (
    SOURCES,
    LoadResult,
    PRMDataError,
    StepLabelled,
    export_trl,
    read_jsonl,
    to_trl,
    write_jsonl,
)

__all__ = [
    "NEUTRAL_POLICIES",
    "SOURCES",
    "TAG",
    "LoadResult",
    "PRMDataError",
    "StepLabelled",
    "export_trl",
    "load_math_shepherd",
    "load_processbench",
    "load_prm800k",
    "parse_math_shepherd",
    "read_jsonl",
    "to_trl",
    "write_jsonl",
]
