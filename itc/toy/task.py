"""The embedded world's task: running arithmetic with checkable steps, in any order.

A problem reads ``Start at 27 and do A+5 B-3 C+8.``; a solution takes one step per
labelled operation, restating it and then doing it (``B-3 27-3=24``, ``A+5 24+5=29``,
``C+8 29+8=37``), then ``\\boxed{37}``, with steps separated by ``"\\n\\n"``. Additions
and subtractions commute, so the operations may be done in **any order**: a problem has
many valid solutions, all ending at the same answer, as a real math problem has many
valid derivations. A slip on one path (a wrong sum, an operation done twice or skipped)
then leads to a different wrong answer than a slip on another, so the wrong answers of
sampled solutions scatter while the right ones agree: the structure that makes voting
and verifiers pay off (the policy is trained on every order, see ``build.py``).

Each operation is one token and its label the token just before it, so copying an
operation is a one-token lookup. Every step of any text can be checked exactly
(:func:`step_labels`), so sampled solutions get gold step labels for free. A step's gold
label is True when the step is a valid next step *and* every step before it was (the
solution is still on track), so the first False label is the first error.

Problems with multiplication (``C*2``) are done in the order given, as the order then
changes the answer.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
    # Every order of the operations keeps the running value within 0..MAX_VALUE (so any
    # order is a valid solution); otherwise only the given order does.
    any_order_in_range: bool = True


# Difficulty rises with the number of operations to keep track of.
LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(2, "+-"),
    2: LevelSpec(3, "+-"),
    3: LevelSpec(4, "+-"),
    4: LevelSpec(5, "+-"),
    5: LevelSpec(7, "+-"),
}
# The long-chain setting (for TTT backbones): 64 or more steps of addition and subtraction,
# done in the given order.
LONG_CHAIN = LevelSpec(64, "+-", any_order_in_range=False)


@dataclass(frozen=True)
class ToyProblem:
    start: int
    ops: tuple[tuple[str, int], ...]
    level: int

    @property
    def text(self) -> str:
        applied = " ".join(f"{op_label(i)}{op}{x}" for i, (op, x) in enumerate(self.ops))
        return f"Start at {self.start} and do {applied}."

    @property
    def any_order(self) -> bool:
        """Whether the operations may be done in any order (they all commute)."""
        return all(op in "+-" for op, _ in self.ops)

    def values(self) -> list[int]:
        """The running value before the first and after every operation, in the given order."""
        vals = [self.start]
        for op, x in self.ops:
            vals.append(apply_op(vals[-1], op, x))
        return vals

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def reference_steps(self, order: Sequence[int] | None = None) -> list[str]:
        """The solution's steps doing the operations in ``order`` (indices; default: as given)."""
        value, steps = self.start, []
        for i in range(len(self.ops)) if order is None else order:
            op, x = self.ops[i]
            new = apply_op(value, op, x)
            steps.append(f"{op_label(i)}{op}{x} {value}{op}{x}={new}")
            value = new
        return steps + [f"\\boxed{{{value}}}"]

    @property
    def solution(self) -> str:
        """The reference solution, operations in the given order."""
        return STEP_DELIMITER.join(self.reference_steps())

    def random_solution(self, rng: random.Random) -> str:
        """A valid solution in an order drawn by ``rng`` (the given order when order matters)."""
        order = list(range(len(self.ops)))
        if self.any_order:
            rng.shuffle(order)
        return STEP_DELIMITER.join(self.reference_steps(order))

    def next_steps(self, steps: Sequence[str]) -> dict[str, tuple[int | None, int]] | None:
        """The valid next steps after ``steps`` (each mapped to the operation it does, None
        for the final answer, and the running value after it), or None when ``steps`` are
        not on track or already end in the answer."""
        used: set[int] = set()
        value = self.start
        for step in steps:
            nexts = self.next_steps_from(used, value)
            hit = nexts.get(step.strip())
            if hit is None or hit[0] is None:
                return None
            used.add(hit[0])
            value = hit[1]
        return self.next_steps_from(used, value)

    def next_steps_from(self, used: set[int], value: int) -> dict[str, tuple[int | None, int]]:
        """The valid next steps once the operations ``used`` are done and at ``value``."""
        remaining = [i for i in range(len(self.ops)) if i not in used]
        if not remaining:
            return {f"\\boxed{{{value}}}": (None, value)}
        if not self.any_order:
            remaining = remaining[:1]
        out: dict[str, tuple[int | None, int]] = {}
        for i in remaining:
            op, x = self.ops[i]
            new = apply_op(value, op, x)
            out[f"{op_label(i)}{op}{x} {value}{op}{x}={new}"] = (i, new)
        return out

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
    """Draw one problem; every running value stays within 0..MAX_VALUE, in every order of
    the operations when ``spec.any_order_in_range`` (and without multiplication)."""
    spec = spec or LEVELS[level]
    if spec.any_order_in_range and "*" not in spec.ops:
        ops = tuple((rng.choice(spec.ops), rng.randint(1, 9)) for _ in range(spec.num_ops))
        down = sum(x for op, x in ops if op == "-")
        up = sum(x for op, x in ops if op == "+")
        if down + up > MAX_VALUE - 1:
            raise ValueError(f"{spec.num_ops} operations cannot stay within 1..{MAX_VALUE} in every order")
        return ToyProblem(rng.randint(max(1, down), MAX_VALUE - up), ops, level)
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
        spec = replace(LONG_CHAIN, num_ops=long_chain_steps) if long_chain_steps else None
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
    """Gold label per step: True while every step so far is a valid next step (an operation
    not yet done, copied and computed exactly from the running value; then the answer)."""
    if isinstance(problem, str):
        problem = parse_problem(problem)
    labels: list[bool] = []
    used: set[int] = set()
    value: int | None = problem.start  # None once off track or past the answer
    for step in steps:
        hit = problem.next_steps_from(used, value).get(step.strip()) if value is not None else None
        if hit is None:
            value = None
        elif hit[0] is None:  # the answer: nothing may follow it
            labels.append(True)
            value = None
            continue
        else:
            used.add(hit[0])
            value = hit[1]
        labels.append(value is not None)
    return labels


def step_is_valid_arithmetic(step: str) -> bool | None:
    """Whether ``a op b = c`` holds; None when the step is not an equation."""
    m = _STEP_RE.match(step.strip())
    if not m:
        return None
    a, op, b, c = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
    return apply_op(a, op, b) == c
