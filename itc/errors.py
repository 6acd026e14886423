"""Failures a user can fix, told apart from bugs: every CLI turns these into
``<command>: error: <message>`` and exit status 2 (see :mod:`itc.cli.errors`)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad data, settings or run folder; the message names the file:line, key or path."""


class BackendError(RuntimeError):
    """A model engine or server failed to start or answer; the message names the backend."""


__all__ = ["BackendError", "InputError"]
