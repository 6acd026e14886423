"""How a command that may start vLLM engines ends: engines shut down, then a clean exit.

Every command runs under :func:`command_process`. On success, on an expected error and on a
bug alike it shuts the process's engines down through vLLM's own path (the engine core and
its workers stop, the client's output thread is joined), and exits with the status the work
earned: 0, 2 for expected errors, 1 for a bug (with its traceback), 130 on Ctrl-C.

Why the exit skips the interpreter's finalization once vLLM was loaded: vLLM's client, the
ZMQ library under it and torch leave daemon threads behind (engine monitors, socket
threads; vLLM's shutdown signals its output thread but does not join it). When the
interpreter finalizes, a daemon thread that is inside C++ code (a torch op, a socket call)
and asks for the GIL again is ended with ``pthread_exit``, which unwinds its stack by force
through C++ frames that may not be unwound, and the C++ runtime calls ``std::terminate``:
"terminate called without an active exception", SIGABRT, exit status 134, after all work was
done and written. (A script with a daemon thread running ``torch.mm`` in a loop shows it at
every exit; tests/test_engine_lifecycle.py runs one under :func:`command_process`.) So, after the engines are down, the command runs the ``atexit`` handlers
itself (logging flushes and closes, temporary folders go), flushes its streams and leaves
with ``os._exit``: no thread is unwound, and the status is the one above.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn


def shutdown_engines() -> None:
    """Shut down this process's vLLM engines, if it started any (without importing vLLM)."""
    backend = sys.modules.get("itc.policy.vllm_backend")
    if backend is not None:
        backend.shutdown_engines()


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and exits 1
    return 1


def exit_process(status: int) -> NoReturn:
    """Exit with ``status``: through ``os._exit`` once vLLM was loaded (see the module
    docstring), after running the exit handlers and flushing; else as usual."""
    if "vllm" not in sys.modules:
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


@contextmanager
def command_process() -> Iterator[None]:
    """Run a command's body; then shut its engines down and exit with the earned status."""
    status = 0
    try:
        yield
    except SystemExit as e:
        status = _status(e.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        status = 130
    except BaseException:  # noqa: BLE001 - a bug: keep its traceback, still shut down
        traceback.print_exc()
        status = 1
    try:
        shutdown_engines()
    except Exception:  # noqa: BLE001 - the status above is what the user needs to see
        traceback.print_exc()
        status = status or 1
    exit_process(status)
