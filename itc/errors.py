"""Failures a user can fix, told apart from bugs: every CLI turns these into
``<command>: error: <message>`` and exit status 2 (see :mod:`itc.cli.errors`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class InputError(ValueError):
    """Bad data, settings or run folder; the message names the file:line, key or path."""


class BackendError(RuntimeError):
    """A model engine or server failed to start or answer; the message names the backend."""


@contextmanager
def loading(what: str, backend: str, model: str) -> Iterator[None]:
    """Loading ``what`` (``policy 'toy'``) on ``backend``: a failure that is not bad input
    becomes a :class:`BackendError` naming the backend and the model."""
    try:
        yield
    except (InputError, BackendError):  # already say what failed
        raise
    except Exception as e:  # noqa: BLE001 - an engine fails in many ways; name which one
        raise BackendError(
            f"{what}: the {backend} backend failed to load {model!r} ({type(e).__name__}: {e})"
        ) from e


__all__ = ["BackendError", "InputError", "loading"]
