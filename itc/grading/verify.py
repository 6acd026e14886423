"""Answer equivalence with math-verify, under a per-call deadline.

math-verify's own timeouts use SIGALRM, which only works in a process's main thread.
So: in the main thread we use its deadline directly; in any other thread the check runs
in a small worker process (pebble), which is killed and replaced when it overruns.
A check that times out counts as "not equivalent" and is logged.

Model output goes through math-verify's LaTeX parser only (never sympy's ``parse_expr``
or ``sympify``, which evaluate Python).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache

from itc.grading.answers import as_plain_number, normalize

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5
_pool = None
_pool_lock = threading.Lock()


def _verify_latex(gold: str, pred: str, timeout: int | None) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    if timeout is None:  # the worker process bounds the time; silence its reminder
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    config = [LatexExtractionConfig()]
    g = parse(f"${gold}$", extraction_config=config, parsing_timeout=timeout)
    p = parse(f"${pred}$", extraction_config=config, parsing_timeout=timeout)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=timeout))


def _worker_pool():
    global _pool
    with _pool_lock:
        if _pool is None:
            from pebble import ProcessPool

            _pool = ProcessPool(max_workers=1, context=multiprocessing.get_context("spawn"))
            atexit.register(_pool.stop)
        return _pool


@lru_cache(maxsize=65536)
def answers_equivalent(pred: str | None, gold: str | None, timeout: int = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two extracted answers (LaTeX, no ``$``) are mathematically the same.

    ``gold`` is the reference side (math-verify is not symmetric).
    """
    if pred is None or gold is None:
        return False
    if normalize(pred) == normalize(gold):
        return True
    a, b = as_plain_number(pred), as_plain_number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(b))
    if threading.current_thread() is threading.main_thread():
        return _verify_latex(gold, pred, timeout)
    future = _worker_pool().schedule(_verify_latex, args=(gold, pred, None), timeout=timeout)
    try:
        return future.result()
    except FutureTimeout:
        log.warning("math-verify timed out after %ss on %r vs %r", timeout, pred[:80], gold[:80])
        return False
