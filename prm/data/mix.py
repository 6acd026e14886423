"""The PRM training data mix: PRM800K, Math-Shepherd, automatic labels, toy gold labels
(on the policy's samples, and on reference solutions with one step corrupted).

``build_mix(cfg, policy_factory, cache)`` reads or makes every configured source and
returns their records together. Sampled sources (``toy``, ``auto``) are written to
``cache`` as JSONL, keyed by their settings and the policy, so a rerun reuses them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from itc.cache import fingerprint
from itc.policy import Policy
from itc.toy import generate
from prm.data.math_shepherd import load_math_shepherd
from prm.data.prm800k import load_prm800k
from prm.data.records import StepLabelled, read_jsonl, write_jsonl

log = logging.getLogger(__name__)

MIX_SOURCES = ("toy", "toy_corrupted", "auto", "prm800k", "math_shepherd", "step_labelled")


def _toy_problems(c: dict[str, Any]):
    return [
        p.to_problem()
        for p in generate(c["num_problems"], c.get("seed", 0), tuple(c["levels"]), "train")
    ]


def _sample_toy(c: dict[str, Any], policy: Policy) -> list[StepLabelled]:
    from prm.data.toy import sample_gold_records

    return sample_gold_records(
        policy, _toy_problems(c), c["samples_per_problem"], c.get("temperature")
    )


def _sample_auto(c: dict[str, Any], policy: Policy) -> list[StepLabelled]:
    from prm.autolabel import rollout_labels
    from itc.candidates import split_steps

    problems = _toy_problems(c)
    prompts = [policy.format_prompt(p.problem) for p in problems]
    sampled = policy.generate(prompts, n=c["samples_per_problem"], temperature=c.get("temperature"))
    solutions = [
        [s for s in (split_steps(x.text, policy.step_delimiter) for x in comps) if s]
        for comps in sampled
    ]
    return rollout_labels(policy, problems, solutions, n=c["rollouts"])


def _cached(
    name: str, c: dict[str, Any], make: Callable[[], list[StepLabelled]], cache: Path, key: str
) -> list[StepLabelled]:
    path = cache / f"{name}-{fingerprint(json.dumps(c, sort_keys=True), key)}.jsonl"
    if path.exists():
        log.info("reusing %s records from %s", name, path)
        return list(read_jsonl(path))
    records = make()
    write_jsonl(records, path)
    log.info("wrote %d %s records to %s", len(records), name, path)
    return records


def build_mix(
    cfg: dict[str, Any], policy_factory: Callable[[], Policy], cache: Path, policy_key: str = ""
) -> tuple[list[StepLabelled], dict[str, int]]:
    """All records of the mix and how many came from each source.

    ``cfg`` maps a source to its settings; a source with ``num_problems: 0`` or no
    ``paths`` contributes nothing. ``policy_factory`` is called only if a sampled source
    needs the policy and its records are not cached.
    """
    unknown = set(cfg) - set(MIX_SOURCES)
    if unknown:
        raise ValueError(
            f"unknown PRM data source(s) {sorted(unknown)}; sources are {', '.join(MIX_SOURCES)}"
        )
    policy: Policy | None = None

    def get_policy() -> Policy:
        nonlocal policy
        policy = policy or policy_factory()
        return policy

    records: list[StepLabelled] = []
    counts: dict[str, int] = {}
    for name, c in cfg.items():
        c = dict(c or {})
        got: list[StepLabelled] = []
        if name == "toy" and c.get("num_problems"):
            stop = c.pop("stop_at_first_error", False)
            got = _cached(name, c, lambda c=c: _sample_toy(c, get_policy()), cache, policy_key)
            if stop:
                got = [r.up_to_first_error() for r in got]
        elif name == "toy_corrupted" and c.get("num_problems"):
            from prm.data.toy import corrupted_records

            problems = generate(c["num_problems"], c.get("seed", 0), tuple(c["levels"]), "train")
            got = corrupted_records(problems, c.get("samples_per_problem", 1), c.get("seed", 0))
        elif name == "auto" and c.get("num_problems"):
            got = _cached(name, c, lambda c=c: _sample_auto(c, get_policy()), cache, policy_key)
        for path in c.get("paths") or []:
            if name == "auto" or name == "step_labelled":
                got += list(read_jsonl(path, skip_bad=c.get("skip_bad", False)))
            elif name == "prm800k":
                got += list(
                    load_prm800k(
                        path,
                        neutral=c.get("neutral", "good"),
                        skip_bad=c.get("skip_bad", False),
                        include_alternatives=c.get("include_alternatives", False),
                    )
                )
            elif name == "math_shepherd":
                got += list(load_math_shepherd(path, skip_bad=c.get("skip_bad", False)))
            else:
                raise ValueError(f"data.{name} takes no paths")
        counts[name] = len(got)
        records += got
    if policy is not None:
        policy.close()
    return records, counts
