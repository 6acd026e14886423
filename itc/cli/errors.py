"""One error style for every command: an expected failure prints ``<command>: error: ...``
on one line and exits with status 2; anything else is a bug and keeps its traceback.

Expected failures are bad input or settings (:class:`itc.errors.InputError`, Hydra's and
OmegaConf's config errors), I/O errors (named by path) and engine failures
(:class:`itc.errors.BackendError`). ``--debug`` or ``HYDRA_FULL_ERROR=1`` shows the
traceback of an expected failure too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from itc.errors import BackendError, InputError

T = TypeVar("T")
DEBUG_FLAG = "--debug"
_debug = False


def debugging() -> bool:
    """Whether tracebacks are wanted (``--debug``, or ``HYDRA_FULL_ERROR=1`` at start)."""
    return _debug


def pop_debug_flag(argv: list[str] | None = None) -> bool:
    """Remove ``--debug`` from ``argv`` (default ``sys.argv``); whether tracebacks are wanted."""
    global _debug
    argv = sys.argv if argv is None else argv
    if DEBUG_FLAG in argv[1:]:
        argv[1:] = [a for a in argv[1:] if a != DEBUG_FLAG]
        _debug = True
    _debug = _debug or os.environ.get("HYDRA_FULL_ERROR") == "1"
    return _debug


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def expected_message(exc: BaseException) -> str | None:
    """The message of an expected failure, or None for a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import InterpolationResolutionError, ValidationError

    # of OmegaConf's errors, those a command line can cause (a bad ${...}, a wrong type)
    config = (HydraException, InterpolationResolutionError, ValidationError)
    if isinstance(exc, (InputError, BackendError, *config)):
        return _one_line(str(exc))
    if isinstance(exc, OSError):
        if exc.filename is None:
            return _one_line(str(exc))
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 else "")
        return _one_line(f"{exc.strerror or exc.__class__.__name__}: {where}")
    return None


@contextmanager
def cli_errors(prog: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn an expected failure in the block (or one of the types ``also``) into
    ``prog: error: ...`` and exit 2."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - sorted below; bugs are re-raised
        msg = expected_message(e) or (_one_line(str(e)) if isinstance(e, also) else None)
        if msg is None or debugging():
            raise
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)


def run_hydra_app(prog: str, app: Callable[[], T]) -> T | Any:
    """Run a ``@hydra.main`` app under :func:`cli_errors`, with ``--debug`` taken out of
    the arguments. Hydra then re-raises what fails in composing the config or preparing the
    output folder (it would print it as a traceback and exit 1), so that it is reported here
    like any other failure."""
    pop_debug_flag()
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with cli_errors(prog):
            return app()
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


__all__ = ["cli_errors", "debugging", "expected_message", "pop_debug_flag", "run_hydra_app"]
