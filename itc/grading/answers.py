"""Answer extraction: the last ``\\boxed{}`` (or ``\\fbox{}``) of a text, braces matched.

This is string scanning only; nothing here evaluates the text.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` in ``text``, or None.

    Also accepts MATH's occasional ``\\boxed 5`` form (a bare token after a space).
    """
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = "\\boxed" if text.startswith("\\boxed", start) else "\\fbox"
    i = start + len(cmd)
    if text.startswith(" ", i):
        m = re.match(r" +([^\s$]+)", text[i:])
        return m.group(1) if m else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced: the box never closed


_STRIP = [
    (re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\ |\$"), ""),
    (re.compile(r"\\[dt]frac"), r"\\frac"),
    (re.compile(r"\s+"), ""),
    (re.compile(r"\^\{?\\circ\}?"), ""),
    (re.compile(r"\.$"), ""),
]


def normalize(answer: str) -> str:
    """A light textual normal form, used only as a fast path before math-verify."""
    s = answer
    for pattern, repl in _STRIP:
        s = pattern.sub(repl, s)
    return s


_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def as_plain_number(answer: str) -> float | None:
    """The value of a plain decimal literal like ``-12`` or ``0.5`` (no evaluation)."""
    s = normalize(answer).replace("{,}", "")
    if _NUMBER.match(s):
        return float(s)
    return None
