"""Shards: ``shard=I/K`` runs every problem whose id hashes to ``I`` modulo ``K``.

The split depends on the problem id alone (a SHA-256 of it), so it is the same on every
machine, whatever the order of the dataset or its other problems, and the ``K`` shards of a
run cover its problems exactly once. ``itc-curves`` merges the shards of a run
(:mod:`evals.shards`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from itc.errors import InputError

P = TypeVar("P")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """The run folder's suffix, ``-shard<I>of<K>``."""
        return f"-shard{self.index}of{self.count}"

    def holds(self, problem_id: str) -> bool:
        return shard_of(problem_id, self.count) == self.index


def parse_shard(value: object) -> Shard | None:
    """``"I/K"`` (0 <= I < K) as a :class:`Shard`; None for None. Raises InputError."""
    if value is None:
        return None
    m = _SHARD.match(str(value))
    if m is None or not 0 <= int(m[1]) < int(m[2]):
        raise InputError(f"shard={value}: expected I/K with 0 <= I < K, e.g. shard=0/4")
    return Shard(int(m[1]), int(m[2]))


def shard_of(problem_id: str, count: int) -> int:
    """The shard (of ``count``) that holds ``problem_id``."""
    digest = hashlib.sha256(str(problem_id).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(problems: Sequence[P], shard: Shard | None, key=lambda p: p.id) -> list[P]:
    """The problems of ``shard`` (all of them for None), in their order."""
    if shard is None:
        return list(problems)
    return [p for p in problems if shard.holds(key(p))]
