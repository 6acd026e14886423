"""Answer equivalence with math-verify, under a per-call deadline and a per-problem budget.

math-verify's own timeouts use SIGALRM, which only works in a process's main thread.
So: in the main thread we use its deadline directly; in any other thread the check runs
in a small worker process (pebble), which is killed and replaced when it overruns.
A check that times out counts as "not equivalent" and is logged, and the answer that took
too long is not parsed again in this process: it stands alone. A :class:`GradingBudget`
bounds the time one problem's grading may take in all; once it is spent, the remaining
comparisons are of canonical strings only (:func:`itc.grading.answers.normalize`).

Model output goes through math-verify's LaTeX parser only (never sympy's ``parse_expr``
or ``sympify``, which evaluate Python).
"""

from __future__ import annotations

import atexit
import logging
import math
import multiprocessing
import threading
import time
from collections import OrderedDict
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache

from itc.grading.answers import as_plain_number, normalize

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5
DEFAULT_BUDGET_S = 30.0  # one problem's grading (grouping its answers, grading them)
_TIMED_OUT_KEPT = 4096
_pool = None
_pool_lock = threading.Lock()
_timed_out: OrderedDict[str, None] = OrderedDict()  # answers that timed out once
PRED, GOLD = "pred", "gold"  # which side of a check ran out of its own time
BUDGET = "budget"  # a check cut short by the problem's grading budget


def _verify_latex(gold: str, pred: str, timeout: int | None, deadline: float | None = None) -> bool | str:
    """True or False, or which side (``PRED``/``GOLD``) ran out of time, or ``BUDGET``. Each
    of the three stages (parse gold, parse prediction, compare) gets ``timeout`` seconds, and
    no more than is left before ``deadline`` (a ``time.monotonic()`` value)."""
    from math_verify import LatexExtractionConfig, parse, verify
    from math_verify.errors import TimeoutException

    def seconds() -> int | None:
        if timeout is None:
            return None
        if deadline is None:
            return timeout
        return min(timeout, int(deadline - time.monotonic()))

    if timeout is None:  # the worker process bounds the time; silence its reminder
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    config = [LatexExtractionConfig()]
    parsed = []
    for side, text in ((GOLD, gold), (PRED, pred)):
        t = seconds()
        if t is not None and t < 1:
            return BUDGET
        try:
            parsed.append(parse(f"${text}$", extraction_config=config, parsing_timeout=t, raise_on_error=True))
        except TimeoutException:
            return side if t == timeout else BUDGET
        except Exception:  # noqa: BLE001 - unparsable: not equivalent
            return False
    g, p = parsed
    if not g or not p:
        return False
    t = seconds()
    if t is not None and t < 1:
        return BUDGET
    try:
        return bool(verify(g, p, timeout_seconds=t, raise_on_error=True))
    except TimeoutException:
        return PRED if t == timeout else BUDGET
    except Exception:  # noqa: BLE001 - an error comparing: not equivalent
        return False


def _worker_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            from pebble import ProcessPool

            _pool = ProcessPool(max_workers=1, context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.stop)
        return _pool


def timed_out(answer: str) -> bool:
    """Whether math-verify ran out of time on ``answer`` before (then it is not parsed again)."""
    return answer in _timed_out


def _mark_timed_out(answer: str) -> None:
    _timed_out[answer] = None
    if len(_timed_out) > _TIMED_OUT_KEPT:
        _timed_out.popitem(last=False)


def _decided_without_sympy(pred: str | None, gold: str | None) -> bool | None:
    """Equivalence decided without math-verify: a missing answer, equal canonical strings,
    plain numbers, or an answer that timed out before (it stands alone); else None."""
    if pred is None or gold is None:
        return False
    cheap = _cheap(pred, gold)
    if cheap is not None:
        return cheap
    if timed_out(pred) or timed_out(gold):
        return False
    return None


def _cheap(pred: str, gold: str) -> bool | None:
    """Equivalence decided without math-verify (equal canonical strings, plain numbers)."""
    if normalize(pred) == normalize(gold):
        return True
    a, b = as_plain_number(pred), as_plain_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    return None


@lru_cache(maxsize=65536)
def answers_equivalent(
    pred: str | None, gold: str | None, timeout: int = DEFAULT_TIMEOUT_S, deadline: float | None = None
) -> bool:
    """Whether two extracted answers (LaTeX, no ``$``) are mathematically the same.

    ``gold`` is the reference side (math-verify is not symmetric). ``deadline`` (a
    ``time.monotonic()`` value) cuts the check short; see :class:`GradingBudget`.
    """
    decided = _decided_without_sympy(pred, gold)
    if decided is not None:
        return decided
    if threading.current_thread() is threading.main_thread():
        verdict = _verify_latex(gold, pred, timeout, deadline)
    else:
        left = timeout if deadline is None else min(timeout, deadline - time.monotonic())
        future = _worker_pool().schedule(_verify_latex, args=(gold, pred, None), timeout=max(left, 0.01))
        try:
            verdict = future.result()
        except FutureTimeout:
            verdict = PRED if left == timeout else BUDGET
    if verdict == BUDGET:
        return False
    if isinstance(verdict, str):
        slow, other = (gold, pred) if verdict == GOLD else (pred, gold)
        _mark_timed_out(slow)
        log.warning("math-verify ran out of time on %r (against %r); not parsed again", slow[:80], other[:80])
        return False
    return verdict


class GradingBudget:
    """The time one problem's grading may take (default 30 s). Within it, answers are compared
    by :func:`answers_equivalent`; after it, by canonical string only, and ``exhausted``
    says so (for the problem's record)."""

    def __init__(self, seconds: float | None = None, timeout: int = DEFAULT_TIMEOUT_S) -> None:
        self.deadline = time.monotonic() + (DEFAULT_BUDGET_S if seconds is None else seconds)
        self.timeout = timeout
        self.exhausted = False

    def equivalent(self, pred: str | None, gold: str | None) -> bool:
        decided = _decided_without_sympy(pred, gold)
        if decided is not None:
            return decided
        if self.deadline - time.monotonic() < 1:
            self.exhausted = True
            return False
        if self.deadline - time.monotonic() >= 3 * self.timeout + 1:  # cannot be cut short
            return answers_equivalent(pred, gold, self.timeout)
        same = answers_equivalent.__wrapped__(pred, gold, self.timeout, self.deadline)  # not cached
        self.exhausted = self.deadline - time.monotonic() < 1
        return same


def _numeric_latex(text: str, timeout: int | None) -> float | None | str:
    """The value of a numeric LaTeX expression (``\\frac{3}{4} \\times 8``) parsed by
    math-verify, None when it is not one number, or ``PRED`` when it ran out of ``timeout``
    seconds (parsing and evaluating both count)."""
    import math_verify.parser
    from math_verify import LatexExtractionConfig, parse
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout as deadline

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # its reminder: the time is bounded here

    def value() -> float | None:
        parsed = parse(f"${text}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None, raise_on_error=True)
        expr = parsed[0] if parsed else None
        if expr is None or not getattr(expr, "is_number", False):
            return None
        z = complex(expr.evalf(30))
        real = abs(z.imag) <= 1e-12 * max(1.0, abs(z.real)) and math.isfinite(z.real)
        return z.real if real else None

    try:
        return deadline(timeout)(value)()
    except TimeoutException:
        return PRED
    except Exception:  # noqa: BLE001 - unparsable or not a number: no value
        return None


def numeric_value(text: str, budget: GradingBudget | None = None) -> float | None:
    """The number a LaTeX expression denotes, or None (not a number, unparsable, or out of
    time). Parsing and evaluation run under the per-call timeout of math-verify (in a worker
    process off the main thread), cut short by ``budget``'s deadline when one is given."""
    if timed_out(text):
        return None
    timeout = DEFAULT_TIMEOUT_S if budget is None else budget.timeout
    if budget is not None:
        left = budget.deadline - time.monotonic()
        if left < 1:
            budget.exhausted = True
            return None
        timeout = min(timeout, int(left))
    if threading.current_thread() is threading.main_thread():
        result = _numeric_latex(text, timeout)
    else:
        future = _worker_pool().schedule(_numeric_latex, args=(text, None), timeout=timeout)
        try:
            result = future.result()
        except FutureTimeout:
            result = PRED
    if result == PRED:
        _mark_timed_out(text)
        log.warning("math-verify ran out of time on %r; not parsed again", text[:80])
        return None
    return result
