"""One process per run: an advisory lock beside the run's checkpoint.

Two processes that reach the same cell (two terminals, two queues, overlapping sweeps) would otherwise
both resume from and overwrite one checkpoint. The first to start takes ``<checkpoint>.lock`` with
``flock``; the second is told which process holds it and leaves the cell alone. The kernel drops the
lock when its holder dies (``kill -9`` included), so a stale lock file never blocks a later run; the
holder removes the file when it is done, so a finished run leaves nothing behind.

Where ``fcntl`` is missing (Windows) runs are not locked, as before.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:   # pragma: no cover - not POSIX
    fcntl = None


class RunBusy(Exception):
    """Another live process holds the run's lock."""

    def __init__(self, path: Path, holder: str):
        self.path, self.holder = path, holder
        super().__init__(f"another process ({holder}) is running this cell (lock {path}); its checkpoint "
                         "is left alone: rerun when it has finished (a finished record is then skipped)")


class RunLock:
    """``with RunLock(path):`` holds ``path`` exclusively or raises :class:`RunBusy` at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid unknown"
                os.close(fd)
                raise RunBusy(self.path, holder) from None
            # the holder before us may have removed the file between our open and our lock: then we
            # hold a lock on a name nobody else sees, so take the lock again on the current file
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()   # while still held: a waiter that opened the old file retries (above)
        except FileNotFoundError:
            pass
        os.close(self._fd)       # closing drops the flock
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: str | Path) -> str | None:
    """Who holds the lock at ``path`` ("pid N on host"), or None when nobody does (no file, a file left by a
    killed process, or no ``fcntl``). Reads only: it never creates the file, and a lock it takes to look is
    dropped at once."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "pid unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
