"""Equations inside a solution step that are plainly false (``7+5=13``): an external signal,
beside the PRM, that a step went wrong.

A step is read as a model writes it: plain text or LaTeX, with spaces, units, variables and
chains (``$a = 1 + 2 = 3$``, ``20 - 6 = 14 pens``, ``$5 \\times 3 = 15$``). Each ``=`` joins
the numeric expression that ends just before it to the one that begins just after it. A
side is taken only when it is clearly the whole of that side: it is preceded by the start of
the text, punctuation, math delimiters, another number, or a linking word ("is", "so",
"gives"...), not by a variable, a unit or an operator word ("20% of 50"); and it is not
followed by a variable or an operator word. Each side is parsed by math-verify's LaTeX
parser under the grading deadline (:func:`itc.grading.verify.numeric_value`), never with
``eval`` or ``sympify``. A step is false only when both sides of one of its equations are
numbers and they differ by more than the rounding of a written decimal (``\\frac{1}{3} =
0.33`` holds). Anything that cannot be read is not called false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from itc.grading.answers import as_plain_number
from itc.grading.verify import GradingBudget, numeric_value

# Token kinds
NUM, OP, OPEN, CLOSE, CMD, WORD, PUNCT = "num", "op", "open", "close", "cmd", "word", "punct"
_VALUE = {NUM, OP, OPEN, CLOSE, CMD}  # what an expression is made of

_UNICODE = {"×": r"\times", "·": r"\cdot", "∙": r"\cdot", "÷": r"\div", "−": "-", "–": "-", "π": r"\pi"}
_FRACTIONS = {r"\frac", r"\dfrac", r"\tfrac"}
_NUMERIC_CMDS = {"frac", "dfrac", "tfrac", "sqrt", "pi"}
_OP_CMDS = {"times": r"\times", "cdot": r"\cdot", "div": r"\div"}
_IGNORED_CMDS = {"left", "right", "displaystyle", "$", ",", ";", "!", ":", " ", "quad", "qquad", "boxed"}
# LaTeX commands that separate statements like punctuation does
_SEPARATOR_CMDS = {"(", ")", "[", "]", "\\", "Rightarrow", "implies", "therefore", "to", "rightarrow"}
_LINKING_WORDS = {
    "is", "are", "was", "were", "be", "so", "then", "thus", "hence", "therefore", "get", "gets",
    "got", "gives", "give", "yields", "have", "has", "had", "that", "which", "compute", "calculate",
    "find", "becomes", "equals", "now", "we", "total", "sum", "product", "answer", "result",
    "since", "because",
}
_OPERATOR_WORDS = {
    "of", "times", "plus", "minus", "x", "by", "per", "divided", "multiplied", "over", "into",
    "squared", "cubed", "percent", "to", "than", "and", "mod", "less", "more",
}

_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:(?:,|\{,\})\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?P<pct>\s*\\?%)?"
    r"|(?P<cmd>\\(?:[A-Za-z]+|.))"
    r"|(?P<word>[A-Za-z]+)"
    r"|(?P<op>[-+*/^])"
    r"|(?P<open>[({\[])"
    r"|(?P<close>[)}\]])"
    r"|(?P<space>\s+)"
    r"|(?P<other>.)",
    re.DOTALL,
)


@dataclass
class _Tok:
    kind: str
    text: str  # as LaTeX for math-verify
    spaced: bool  # whitespace before it


def _tokens(text: str) -> list[_Tok]:
    """The step as tokens; ``\\text{...}`` is one word, currency ``\\$`` and spacing vanish."""
    for u, latex in _UNICODE.items():
        text = text.replace(u, f" {latex} ")
    text = re.sub(r"\\(?:text|mbox|mathrm|textbf)\{[^{}]*\}", " unit ", text)
    out: list[_Tok] = []
    spaced = True
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup if m.lastgroup != "pct" else "num"
        s = m.group(0)
        if kind == "space":
            spaced = True
            continue
        if kind == "num":
            number = m.group("num").replace("{,}", "").replace(",", "")
            tok = _Tok(NUM, f"({number}/100)" if m.group("pct") else number, spaced)
        elif kind == "cmd":
            name = s[1:]
            if name in _IGNORED_CMDS:
                continue  # spacing, \left, currency \$: no meaning here
            if name in _OP_CMDS:
                tok = _Tok(OP, _OP_CMDS[name], spaced)
            elif name in _NUMERIC_CMDS:
                tok = _Tok(CMD, s, spaced)
            elif name in ("{", "}") or name in _SEPARATOR_CMDS:
                tok = _Tok(PUNCT, s, spaced)
            else:
                tok = _Tok(WORD, s, spaced)  # a variable or function (\alpha, \sin, \binom)
        elif kind == "op":
            tok = _Tok(OP, r"\cdot" if s == "*" else s, spaced)
        elif s == "_":
            tok = _Tok(WORD, s, spaced)  # a subscript: a_1 is a name, not the number 1
        elif kind in ("open", "close", "word"):
            tok = _Tok(kind, s, spaced)
        else:
            tok = _Tok(PUNCT, s, spaced)
        out.append(tok)
        spaced = False
    return out


def _left_side(toks: list[_Tok]) -> list[_Tok] | None:
    """The expression ending the tokens before an ``=``, or None when it is not clearly a
    whole numeric side."""
    k = len(toks)
    while k > 0 and toks[k - 1].kind in _VALUE:
        if toks[k - 1].kind == NUM and k < len(toks) and toks[k].kind == NUM and toks[k].spaced:
            break  # "5 7+5": two numbers side by side are two expressions
        k -= 1
    side = toks[k:]
    opened: list[int] = []
    for i, t in enumerate(side):
        if t.kind == OPEN:
            opened.append(i)
        elif t.kind == CLOSE:
            if not opened:
                return None  # "(a + 3) =": the bracket opened before the side
            opened.pop()
    start = opened[-1] + 1 if opened else 0  # "(3 + 4 = 7)": the bracket holds the equation
    side, before = side[start:], toks[k - 1] if k > 0 else None
    if start:
        before = None  # the side begins after an open bracket
    if not side or not side[0].spaced and before is not None and before.kind == WORD:
        return None  # "f(2)", "x2": part of a larger expression
    if before is None:
        return side
    if before.kind == NUM and side[0].spaced:  # "A+5 7+5": another expression before it
        return None if _fraction(side) else side  # "3 1/2": a mixed number
    if before.kind == PUNCT:
        prev = toks[k - 2] if k >= 2 else None
        if prev is not None and (prev.kind == OP or not side[0].spaced and not before.spaced and prev.kind == NUM):
            return None  # "$5 + $3", "3:4"
        return side
    if before.kind == WORD and before.text.lower() in _LINKING_WORDS:
        return side
    return None


def _fraction(side: list[_Tok]) -> bool:
    """Whether the side begins with a fraction (``1/2``, ``\frac{1}{2}``)."""
    return side[0].text in _FRACTIONS or len(side) > 1 and side[0].kind == NUM and side[1].text == "/"


def _right_side(toks: list[_Tok]) -> list[_Tok] | None:
    """The expression beginning the tokens after an ``=``, or None (as :func:`_left_side`)."""
    k, depth = 0, 0
    while k < len(toks) and toks[k].kind in _VALUE:
        t = toks[k]
        if t.kind == NUM and k > 0 and toks[k - 1].kind == NUM and t.spaced:
            return None  # "= 3 1/2": a mixed number, or two expressions
        if t.kind == CLOSE and depth == 0:
            break  # "(3 + 4 = 7)": the bracket closes around the whole equation
        depth += (t.kind == OPEN) - (t.kind == CLOSE)
        k += 1
    side, after = toks[:k], toks[k] if k < len(toks) else None
    if not side or depth != 0:
        return None
    if after is not None and after.kind == WORD and (not after.spaced or after.text.lower() in _OPERATOR_WORDS):
        return None  # "= 2x", "= 10 times ..."
    return side


def _latex(side: list[_Tok]) -> str | None:
    """The side as LaTeX, or None when it is no complete expression."""
    if side[0].kind == OP and side[0].text != "-" or side[-1].kind == OP:
        return None
    if not any(t.kind == NUM or t.text == r"\pi" for t in side):
        return None
    if any(a.kind == NUM and b.text in _FRACTIONS for a, b in pairwise(side)):
        return None  # "3\frac{1}{2}": MATH's mixed number, which a parser reads as a product
    while side[0].text == "{" and side[-1].text == "}" and _matching(side):
        side = side[1:-1]  # "\\boxed{13}" leaves "{13}", which math-verify reads as a set
    out = ""
    for t in side:
        out += (" " if t.spaced and out else "") + t.text
    return out


def _matching(side: list[_Tok]) -> bool:
    """Whether the first token's bracket closes at the last token."""
    depth = 0
    for i, t in enumerate(side):
        depth += t.kind == OPEN
        depth -= t.kind == CLOSE
        if depth == 0:
            return i == len(side) - 1
    return False


def equations(step: str) -> list[tuple[str, str]]:
    """The numeric equations of a step, as (left, right) LaTeX pairs, chains split into
    adjacent pairs."""
    text = re.sub(r"==", "=", step)
    pieces = re.split(r"(?<![<>!:=\\])=(?![>=])", text)
    if len(pieces) < 2:
        return []
    toks = [_tokens(p) for p in pieces]
    pairs = []
    for left, right in pairwise(toks):
        lhs, rhs = _left_side(left), _right_side(right)
        if lhs is None or rhs is None:
            continue
        a, b = _latex(lhs), _latex(rhs)
        if a is not None and b is not None:
            pairs.append((a, b))
    return pairs


def _decimals(side: str) -> int:
    """Decimal places of a plain decimal literal (its rounding), else 0."""
    m = re.fullmatch(r"-?\d*\.(\d+)", side.strip())
    return len(m.group(1)) if m else 0


_INTEGER_ARITHMETIC = re.compile(r"-?\d{1,30}(?:\s*(?:[+-]|\\times|\\cdot)\s*\d{1,30})*")
_TERM = re.compile(r"([+-]?)\s*(\d+(?:\s*(?:\\times|\\cdot)\s*\d+)*)")


def _integer_arithmetic(side: str) -> int | None:
    """The value of integers joined by +, - and products (``7+5``, ``3 \\times 4 - 2``),
    computed exactly without a parser; None for anything else."""
    s = side.strip()
    if not _INTEGER_ARITHMETIC.fullmatch(s):
        return None
    total = 0
    for sign, term in _TERM.findall(s):
        product = 1
        for factor in re.split(r"\\times|\\cdot", term):
            product *= int(factor)
        total += -product if sign == "-" else product
    return total


def _value(side: str, budget: GradingBudget | None) -> float | None:
    exact = _integer_arithmetic(side)
    if exact is not None:
        return exact
    plain = as_plain_number(side)
    if plain is not None:
        return plain
    return numeric_value(side, budget)


def false_equation(step: str, budget: GradingBudget | None = None) -> bool:
    """Whether the step states a numeric equation that does not hold. ``budget`` bounds the
    parsing time (default: each side gets math-verify's per-call deadline)."""
    for lhs, rhs in equations(step):
        a = _value(lhs, budget)
        b = _value(rhs, budget) if a is not None else None
        if a is None or b is None:
            continue
        places = max(_decimals(lhs), _decimals(rhs))
        tolerance = (0.5 * 10.0**-places if places else 0.0) + 1e-9 * max(1.0, abs(a), abs(b))
        if abs(a - b) > tolerance:
            return True
    return False
