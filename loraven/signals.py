"""Signals held while a record is written, so a SIGINT or SIGTERM never loses a completed result.

A signal that arrives while ``result.json`` is being written used to raise inside the write: the temp file was
removed, nothing was saved, and the message still said the run was recorded. :func:`deferred` swaps the Python
handlers of SIGINT and SIGTERM for one that only notes the signal; the write finishes, and the caller raises the
interruption afterwards, knowing exactly what it wrote.

Why not ``signal.pthread_sigmask``: it blocks delivery to the calling thread only, and with W&B's and the meters'
threads running, the kernel hands a process-directed signal to one of them; CPython then runs the Python handler
in the main thread at the next bytecode anyway, in the middle of the write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred(pending: list[int] | None = None) -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM for the block; the signals that arrived are appended to the yielded list.

    Outside the main thread (Python installs handlers only there) the block runs unprotected, as before.
    """
    box: list[int] = pending if pending is not None else []
    if threading.current_thread() is not threading.main_thread():
        yield box
        return

    def hold(signum: int, frame) -> None:
        box.append(int(signum))

    previous = {}
    try:
        for sig in HELD:
            previous[sig] = signal.signal(sig, hold)
        yield box
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


_BEFORE_JOB: list[int] = []  # held by a launcher worker before its job's own handlers were in (cli.lifecycle)


def hold_for_job(signum: int) -> None:
    """A signal that reached a launcher worker while its job was starting (validating, claiming): kept for the job,
    which records itself as interrupted by it (:func:`redeliver_to_job`) instead of running to the end."""
    _BEFORE_JOB.append(int(signum))


def redeliver_to_job() -> None:
    """Send this process the signals held for its job, now that the job's handler is in and its record exists."""
    held = list(_BEFORE_JOB)
    _BEFORE_JOB.clear()
    for signum in held[:1]:  # the first one: the job's handler raises once and holds the rest anyway
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # CPython runs the handler at the next bytecode of the main thread: let it land here


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
