"""File helpers every writer shares: all-or-nothing text writes and content hashes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

WRITE_PAUSE_ENV = "LORAVEN_TEST_WRITE_PAUSE"  # tests: "result.json:3" holds 3 s between a file's write and rename


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see all or nothing. The file gets the
    umask's usual mode (mkstemp's 0600 would hide a result from the group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _pause_for_tests(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _pause_for_tests(path: Path) -> None:
    """The fault injector's pause inside an atomic write (the window a signal used to lose a record in)."""
    spec = os.environ.get(WRITE_PAUSE_ENV)
    if spec:
        name, _, seconds = spec.rpartition(":")
        if name == path.name:
            import time

            time.sleep(float(seconds))


def current_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
