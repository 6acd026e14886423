"""The embedded world's task: running arithmetic with checkable steps.

A problem reads ``Start at 7 and do A+5 B-3 C*2.``; its reference solution is one
step per labelled operation, restating it and then doing it (``A+5 7+5=12``,
``B-3 12-3=9``, ``C*2 9*2=18``), then ``\\boxed{18}``, with steps separated by
``"\\n\\n"``. Each operation is one token and its label the token just before it, so
finding the next operation is a one-token induction lookup that a 2-layer model learns
in minutes (with ``b:-3``, sign and digit after a colon, it learned only positions). Every step of any text can be checked against the
reference, so sampled solutions get gold step labels for free.

A step's gold label is True when the step is right *and* every step before it was right
(the solution is still on track), so the first False label is the first error.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from dataclasses import dataclass

from itc.types import Problem

STEP_DELIMITER = "\n\n"
MAX_VALUE = 99
_STEP_RE = re.compile(r"^(?:[a-zA-Z]+[+\-*]\d+ )?(\d+)([+\-*])(\d+)=(\d+)$")
_LETTERS = string.ascii_uppercase + string.ascii_lowercase


def op_label(i: int) -> str:
    """Label of the i-th operation (0-based): A..Z, a..z, then two letters (long chains)."""
    if i < len(_LETTERS):
        return _LETTERS[i]
    i -= len(_LETTERS)
    return _LETTERS[i // len(_LETTERS)] + _LETTERS[i % len(_LETTERS)]


@dataclass(frozen=True)
class LevelSpec:
    """How problems of one difficulty level are drawn."""

    num_ops: int
    ops: str  # which of "+-*" may appear


# Difficulty rises with the number of steps and with multiplication at higher levels.
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(2, "+-"),
    2: LevelSpec(4, "+-"),
    3: LevelSpec(5, "+-*"),
    4: LevelSpec(7, "+-*"),
    5: LevelSpec(9, "+-*"),
}
# The long-chain setting (for TTT backbones): 64 or more steps of addition and subtraction.
LONG_CHAIN = LevelSpec(64, "+-")


@dataclass(frozen=True)
class ToyProblem:
    start: int
    ops: tuple[tuple[str, int], ...]
    level: int

    @property
    def text(self) -> str:
        applied = " ".join(f"{op_label(i)}{op}{x}" for i, (op, x) in enumerate(self.ops))
        return f"Start at {self.start} and do {applied}."

    def values(self) -> list[int]:
        """The running value before the first and after every operation."""
        vals = [self.start]
        for op, x in self.ops:
            vals.append(apply_op(vals[-1], op, x))
        return vals

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def reference_steps(self) -> list[str]:
        vals = self.values()
        steps = [
            f"{op_label(i)}{op}{x} {vals[i]}{op}{x}={vals[i + 1]}"
            for i, (op, x) in enumerate(self.ops)
        ]
        return steps + [f"\\boxed{{{vals[-1]}}}"]

    @property
    def solution(self) -> str:
        return STEP_DELIMITER.join(self.reference_steps())

    @property
    def id(self) -> str:
        return "toy-" + hashlib.sha1(self.text.encode()).hexdigest()[:12]

    def to_problem(self) -> Problem:
        return Problem(
            id=self.id,
            problem=self.text,
            answer=str(self.answer),
            level=self.level,
            subject="arithmetic",
            solution=self.solution,
            meta={"num_steps": len(self.ops) + 1},
        )


def apply_op(value: int, op: str, x: int) -> int:
    """``value op x``."""
    if op == "+":
        return value + x
    if op == "-":
        return value - x
    return value * x


def sample_problem(rng: random.Random, level: int, spec: LevelSpec | None = None) -> ToyProblem:
    """Draw one problem; every running value stays within 0..MAX_VALUE."""
    spec = spec or LEVELS[level]
    value = rng.randint(1, 9)
    start = value
    ops: list[tuple[str, int]] = []
    while len(ops) < spec.num_ops:
        op = rng.choice(spec.ops)
        x = rng.randint(2, 3) if op == "*" else rng.randint(1, 9)
        new = apply_op(value, op, x)
        if 0 <= new <= MAX_VALUE and not (op == "*" and value == 0):
            ops.append((op, x))
            value = new
    return ToyProblem(start, tuple(ops), level)


def is_held_out(problem: ToyProblem) -> bool:
    """A fixed 1-in-8 slice of all problems, by text hash, that training never sees."""
    return int(hashlib.sha1(problem.text.encode()).hexdigest(), 16) % 8 == 0


def generate(
    num_problems: int,
    seed: int,
    levels: tuple[int, ...] = (1, 2, 3, 4, 5),
    split: str = "test",
    long_chain_steps: int | None = None,
) -> list[ToyProblem]:
    """Deterministic problems, spread evenly over ``levels``.

    ``split="test"`` draws only held-out problems, ``split="train"`` only the rest.
    ``long_chain_steps`` switches to the long-chain setting with that many operations.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown toy level {level}; levels are {sorted(LEVELS)}")
    rng = random.Random(f"{seed}-{split}")
    out: list[ToyProblem] = []
    seen: set[str] = set()
    i = misses = 0
    while len(out) < num_problems:
        level = levels[i % len(levels)]
        spec = LevelSpec(long_chain_steps, LONG_CHAIN.ops) if long_chain_steps else None
        p = sample_problem(rng, level, spec)
        if (is_held_out(p) == (split == "test")) and p.text not in seen:
            seen.add(p.text)
            out.append(p)
            i += 1
            misses = 0
        else:
            misses += 1
            if misses > 100_000:  # the level has no unseen problems left
                raise ValueError(
                    f"toy level {level} has fewer distinct {split} problems than the "
                    f"{num_problems // len(levels)} asked of it; ask for fewer problems "
                    "or leave that level out"
                )
    return out


def parse_problem(text: str) -> ToyProblem:
    """Recover the ToyProblem from its text (used to label arbitrary solutions)."""
    m = re.fullmatch(r"Start at (\d+) and do (.*)\.", text.strip())
    if not m:
        raise ValueError(f"not a toy-world problem: {text[:80]!r}")
    ops = []
    for i, part in enumerate(m.group(2).split(" ")):
        if not re.fullmatch(rf"{op_label(i)}[+\-*]\d+", part):
            raise ValueError(f"bad operation {part!r} in toy problem {text[:80]!r}")
        op = part[len(op_label(i)) :]
        ops.append((op[0], int(op[1:])))
    return ToyProblem(int(m.group(1)), tuple(ops), level=0)


def step_labels(problem: ToyProblem | str, steps: list[str]) -> list[bool]:
    """Gold label per step: True while the solution is still exactly on track."""
    if isinstance(problem, str):
        problem = parse_problem(problem)
    reference = problem.reference_steps()
    labels: list[bool] = []
    on_track = True
    for i, step in enumerate(steps):
        on_track = on_track and i < len(reference) and step.strip() == reference[i]
        labels.append(on_track)
    return labels


def step_is_valid_arithmetic(step: str) -> bool | None:
    """Whether ``a op b = c`` holds; None when the step is not an equation."""
    m = _STEP_RE.match(step.strip())
    if not m:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return apply_op(a, op, b) == c
