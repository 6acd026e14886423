"""Equations inside a solution step that are plainly false (``7+5=13``): an external signal,
beside the PRM, that a step went wrong.

Only numeric equations are checked: each ``=`` with a run of digits, operators and a few
LaTeX numeric commands on both sides. A single integer operation is checked exactly in
integer arithmetic; anything else goes through math-verify's LaTeX parser under its
deadline (:func:`itc.grading.verify.answers_equivalent`), never through ``eval`` or
``sympify``. An equation that cannot be parsed is not called false.
"""

from __future__ import annotations

import re

from itc.grading.verify import answers_equivalent

_NUMERIC_COMMANDS = re.compile(r"\\(frac|dfrac|tfrac|cdot|times|div|left|right|sqrt)")
_BINARY = re.compile(r"^\s*(-?\d{1,30})\s*([+\-*]|\\times|\\cdot)\s*(\d{1,30})\s*$")
_INTEGER = re.compile(r"^\s*-?\d{1,60}\s*$")


def _numeric(side: str) -> bool:
    rest = _NUMERIC_COMMANDS.sub("", side)
    return bool(side.strip()) and not re.search(r"[a-z]", rest) and "\\" not in rest


def _sides(step: str) -> list[tuple[str, str]]:
    """Adjacent (left, right) sides of each ``=`` in the step, trimmed to numeric runs."""
    parts = step.split("=")
    pairs = []
    for left, right in zip(parts, parts[1:]):
        lhs = re.split(r"\s(?=[^\s]*$)", left.rstrip())[-1] if " " in left.strip() else left
        rhs = right.strip().split(" ")[0] if right.strip() else ""
        lhs, rhs = lhs.strip().strip("$"), rhs.strip().rstrip(".,;").strip("$")
        if lhs and rhs and _numeric(lhs) and _numeric(rhs):
            pairs.append((lhs, rhs))
    return pairs


def false_equation(step: str) -> bool:
    """Whether the step states a numeric equation that does not hold."""
    for lhs, rhs in _sides(step):
        m = _BINARY.match(lhs)
        if m and _INTEGER.match(rhs):
            a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
            value = a + b if op == "+" else a - b if op == "-" else a * b
            if value != int(rhs):
                return True
            continue
        if not answers_equivalent(lhs, rhs):
            return False if _unparsable(lhs, rhs) else True
    return False


def _unparsable(lhs: str, rhs: str) -> bool:
    """math-verify could not read one side (then we do not judge the equation)."""
    from math_verify import LatexExtractionConfig, parse

    config = [LatexExtractionConfig()]
    return not parse(f"${lhs}$", extraction_config=config) or not parse(f"${rhs}$", extraction_config=config)
