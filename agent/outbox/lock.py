"""One agent per state directory: an exclusive lock, held for the agent's life.

Two agents on one ``state_dir`` each read the other's queue: every event went out three times. The lock is
``flock`` on ``state_dir/lock`` (released by the kernel when the process dies, so a crash never leaves a
stale lock), and the file says which process holds it. ``dutytail dead-letters`` and other commands that
open the store beside a running agent do not take it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class StateDirBusy(RuntimeError):
    """Another agent holds the state directory."""


class StateLock:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.path = Path(state_dir) / "lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateDirBusy` naming the holder. Idempotent; call it again after
        the state directory was deleted to hold a lock on the new one."""
        if self._fd is not None:
            if self._still_ours():
                return
            self.release()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(
                f"state_dir {self.path.parent} is in use by another dutytail (pid {holder}); two agents on one "
                f"state_dir would each send every queued event: give each agent its own state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _still_ours(self) -> bool:
        """Is the locked file still the one at the path (the directory was not deleted and recreated)?"""
        assert self._fd is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        mine = os.fstat(self._fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the flock
            self._fd = None
