"""One owner per run: an OS-level lock on ``<run>/.lock`` (``fcntl.flock``).

The kernel drops the lock when its process dies, ``kill -9`` included, so a lock is never stale. A
second process that wants the run while the first holds it is refused at once, with one line naming
the owner's PID and the run folder (exit 2 in the CLI): it neither waits nor writes anything. The
lock is re-entrant inside one process (a study may open the same run twice) and released when the
run finishes or is marked failed.

On file systems where ``flock`` is not shared between machines (some NFS set-ups), two machines can
still both take a run; run one store per machine there, or use the Ray backend with one driver.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from transferlab.core.errors import StoreError

try:  # POSIX only; elsewhere runs are not locked (documented)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"
_HELD: dict[str, int] = {}  # lock file path -> open file descriptor, for this process


class RunLocked(StoreError):
    """Another live process owns the run."""


def owner_of(path: Path) -> str:
    """What the lock file says about its owner ("PID 123 on host"), or "another process"."""
    try:
        text = (path / LOCK_NAME).read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


def acquire(path: Path) -> None:
    """Own the run folder ``path`` or raise :class:`RunLocked` naming the owner."""
    key = str((path / LOCK_NAME).resolve())
    if key in _HELD or fcntl is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunLocked(
            f"run {path.name} is being trained by {owner_of(path)}", where=str(path),
            fix="wait for it to finish (the result is then reused) or stop that process; "
                "a killed process releases the run at once",
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode())
    _HELD[key] = fd


def release(path: Path) -> None:
    key = str((path / LOCK_NAME).resolve())
    fd = _HELD.pop(key, None)
    if fd is None:
        return
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def held_here(path: Path) -> bool:
    return str((path / LOCK_NAME).resolve()) in _HELD


def held_elsewhere(path: Path) -> bool:
    """True when another live process holds the run's lock (without taking it)."""
    lock = path / LOCK_NAME
    if fcntl is None or held_here(path) or not lock.exists():
        return False
    try:
        fd = os.open(str(lock), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a shared lock we may have taken
    return False
