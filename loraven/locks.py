"""Ownership locks: a small file saying which process holds something (a job's claim, an Optuna study).

A lock names its owner by (host, pid, process start time). The start time is what makes a lock checkable: a pid is
reused by the kernel, so "pid 4242 is alive" proves nothing about the process that wrote the lock, but "pid 4242 is
alive and started at the recorded time" does. From this the state of any lock follows:

- ``free``: no lock;
- ``mine``: this process holds it;
- ``live``: another live process on this host holds it (same pid, same start time);
- ``stale``: its owner is provably gone (the pid is dead, or alive with another start time): taken over, with a
  warning that names it;
- ``unverifiable``: it cannot be checked from here (another host's pid, a lock without a start time written by an
  older loraven, a directory, an empty or garbled file): never trusted and never silently skipped, but reported with
  the command that clears it.

The lock is created with its content in one step (written to a temp file, then ``os.link``-ed into place, which
fails if the name exists), so a reader never sees a half-written lock of a live owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

START_TOLERANCE_S = 0.5  # psutil's create_time is boot time + clock ticks: stable to well within this


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    started: float | None  # the process's start time (seconds since the epoch); None in a legacy lock

    def describe(self) -> str:
        when = (
            ""
            if self.started is None
            else f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}"
        )
        return f"pid {self.pid} on {self.host}{when}"


@dataclass(frozen=True)
class LockState:
    state: str  # free | mine | live | stale | unverifiable
    owner: Owner | None
    detail: str  # why, in words


class LockError(Exception):
    """A lock held by a live owner or one that cannot be verified; the message says what to do."""

    def __init__(self, message: str, state: LockState) -> None:
        super().__init__(message)
        self.state = state


def process_start_time(pid: int) -> float | None:
    """The process's start time, or None if no such process (or a zombie: it has ended)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except (psutil.NoSuchProcess, ValueError):
        return None
    except psutil.Error:  # exists, but cannot be read: treat as alive with an unknown start
        return float("nan")


def me() -> Owner:
    return Owner(socket.gethostname(), os.getpid(), process_start_time(os.getpid()))


def clear_command(path: Path) -> str:
    flag = "-r " if path.is_dir() and not path.is_symlink() else ""
    return f"rm {flag}{shlex.quote(str(path))}"


def read_owner(path: Path) -> Owner:
    """The owner a lock file names; ValueError if it names none (empty, garbled)."""
    text = path.read_text(errors="replace").strip()
    if text.startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a lock record")
        started = data.get("started")
        return Owner(str(data["host"]), int(data["pid"]), None if started is None else float(started))
    pid_text, _, host = text.partition(" ")  # the legacy format: "pid host"
    return Owner(host.strip(), int(pid_text), None)


def inspect(path: Path) -> LockState:
    """What the lock at ``path`` is (see the module docstring)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return LockState("free", None, "no lock")
    if path.is_dir() or not path.is_file():
        return LockState(
            "unverifiable", None, f"{path} is not a lock file (a {'directory' if path.is_dir() else 'special file'})"
        )
    try:
        owner = read_owner(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return LockState("unverifiable", None, f"{path} does not name an owner ({type(err).__name__}: {err})")
    mine = me()
    if owner.host != mine.host:
        return LockState(
            "unverifiable", owner, f"held by {owner.describe()}: another host, its process cannot be checked from here"
        )
    if owner.pid == mine.pid and (owner.started is None or _same_start(owner.started, mine.started)):
        return LockState("mine", owner, "held by this process")
    started = process_start_time(owner.pid)
    if started is None:
        return LockState("stale", owner, f"left by {owner.describe()}, which has ended")
    if owner.started is None:
        return LockState(
            "unverifiable",
            owner,
            f"held by {owner.describe()}, which is alive, but the lock has no start time to tell it from a reused pid",
        )
    if started != started:  # nan: alive, unreadable
        return LockState("unverifiable", owner, f"held by {owner.describe()}, alive but not readable by this user")
    if not _same_start(owner.started, started):
        return LockState(
            "stale", owner, f"left by {owner.describe()}, which has ended (pid {owner.pid} is now another process)"
        )
    return LockState("live", owner, f"held by {owner.describe()}")


def _same_start(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= START_TOLERANCE_S


def acquire(path: Path, what: str, on_stale=None) -> None:
    """Take the lock for this process, or raise :class:`LockError` saying who holds it and how to clear it.

    A stale lock is taken over (``on_stale(detail)`` is called first, for the warning); ``what`` names the thing
    locked in messages ("run abc123", "study tune-lora").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mine = me()
    record = json.dumps({"host": mine.host, "pid": mine.pid, "started": mine.started, "time": time.time()})
    for _ in range(5):
        if _create_with_content(path, record):
            return
        state = inspect(path)
        if state.state == "mine":
            return
        if state.state == "stale":
            if on_stale is not None:
                on_stale(f"{what}: took over the lock {path} {state.detail}")
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if state.state == "free":  # released meanwhile
            continue
        if state.state == "live":
            raise LockError(f"{what} is {state.detail} ({path})", state)
        raise LockError(
            f"{what}: the lock {path} cannot be verified: {state.detail}; if no process is using it, clear it with: "
            f"{clear_command(path)}",
            state,
        )
    raise LockError(f"{what}: could not take the lock {path} (it kept changing)", inspect(path))


def release(path: Path) -> None:
    """Remove the lock if this process holds it (never another's)."""
    path = Path(path)
    if inspect(path).state == "mine":
        with contextlib.suppress(OSError):
            path.unlink()


def _create_with_content(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` in one step; False if the name exists."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write (a tiny window)
            try:
                out = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(out, "w") as fh:
                fh.write(text + "\n")
            return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
