"""The polling backend: no events at all; the source stat()s every directory and every file it follows each
``poll_interval`` (a directory's mtime tells whether to list it again)."""

from __future__ import annotations


class PollingWatch:
    mode = "polling"

    def __init__(self, reason: str) -> None:
        self.error: str | None = reason
        self._dirs: set[str] = set()

    @property
    def event_driven(self) -> bool:
        return False

    def ensure(self, directory: str, renew: bool = False) -> bool:
        self._dirs.add(directory)
        return False

    def retain(self, wanted: set[str]) -> None:
        self._dirs &= wanted

    def watched(self) -> list[str]:
        return []

    def unwatched(self) -> list[str]:
        return sorted(self._dirs)

    def close(self) -> None:
        self._dirs.clear()
