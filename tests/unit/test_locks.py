"""Locks owned by (host, pid, start time): which locks are taken over, which skip, which are reported (issue 26)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loraven import locks


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _write(path: Path, **owner) -> None:
    path.write_text(json.dumps(owner))


def test_states_of_every_kind_of_lock(tmp_path: Path, sleeper) -> None:
    host = socket.gethostname()
    lock = tmp_path / "l"
    assert locks.inspect(lock).state == "free"
    live_start = locks.process_start_time(sleeper.pid)
    cases = {
        "live": dict(host=host, pid=sleeper.pid, started=live_start),
        "stale": dict(host=host, pid=sleeper.pid, started=live_start - 1000.0),  # the pid is another process now
        "unverifiable": dict(host="another-node", pid=os.getpid(), started=live_start),
    }
    for expected, owner in cases.items():
        _write(lock, **owner)
        assert locks.inspect(lock).state == expected, owner
    lock.write_text(f"{sleeper.pid} {host}\n")  # an older loraven's lock on a live pid: cannot tell reuse apart
    assert locks.inspect(lock).state == "unverifiable"
    lock.write_text("")  # an empty file: never written by acquire (content comes with the name)
    assert locks.inspect(lock).state == "unverifiable"
    lock.unlink()
    lock.mkdir()
    assert locks.inspect(lock).state == "unverifiable"


def test_dead_owner_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    started = locks.process_start_time(proc.pid)
    proc.wait()
    lock = tmp_path / "l"
    _write(lock, host=socket.gethostname(), pid=proc.pid, started=started)
    said: list[str] = []
    locks.acquire(lock, "run x", on_stale=said.append)
    assert locks.inspect(lock).state == "mine" and len(said) == 1 and "has ended" in said[0]
    locks.release(lock)
    assert not lock.exists()


@pytest.mark.parametrize("kind", ["other host", "directory", "legacy live pid", "garbage"])
def test_unverifiable_lock_is_reported_with_the_command_that_clears_it(tmp_path: Path, sleeper, kind: str) -> None:
    lock = tmp_path / "run" / ".claim.lock"
    lock.parent.mkdir()
    if kind == "other host":
        _write(lock, host="node-7", pid=123, started=1.0)
    elif kind == "directory":
        lock.mkdir()
    elif kind == "legacy live pid":
        lock.write_text(f"{sleeper.pid} {socket.gethostname()}\n")
    else:
        lock.write_text("\x00\x01 not a lock")
    with pytest.raises(locks.LockError) as info:
        locks.acquire(lock, "run x")
    message = str(info.value)
    assert "\n" not in message and "clear it with: rm " in message and str(lock) in message
    assert lock.exists()  # never removed by us


def test_release_never_removes_another_owners_lock(tmp_path: Path, sleeper) -> None:
    lock = tmp_path / "l"
    _write(lock, host=socket.gethostname(), pid=sleeper.pid, started=locks.process_start_time(sleeper.pid))
    locks.release(lock)
    assert lock.exists()
    with pytest.raises(locks.LockError, match="held by pid"):
        locks.acquire(lock, "run x")


def test_lock_file_is_created_whole(tmp_path: Path) -> None:
    lock = tmp_path / "l"
    locks.acquire(lock, "run x")
    data = json.loads(lock.read_text())
    assert data["pid"] == os.getpid() and data["host"] == socket.gethostname() and data["started"] > 0
    assert oct(lock.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["l"]  # no temp file left
