"""What a source needs of a watcher backend: watch these directories, say which of them send events.

Two backends sit behind this interface (like Fluent Bit's ``tail_fs_inotify.c`` / ``tail_fs_stat.c``):
``inotify`` (events as hints, with a slow staggered check as the safety net) and ``polling`` (no events).
The unit is one directory: the scanner asks for a directory to be watched before it first lists it
(``ensure``), and a directory that cannot be watched (inotify's per-user watch limit, a file system without
inotify) is polled by the source: its mtime and its files' sizes every ``poll_interval``. Either way the data
is the same; only its latency and cost differ.
"""

from __future__ import annotations

from typing import Protocol


class Watch(Protocol):
    mode: str
    """"inotify" or "polling" (shown in /status)."""
    error: str | None
    """Why events are not available (polling), or the last trouble the backend had."""

    @property
    def event_driven(self) -> bool:
        """True while changes arrive as events (rescans may then be rare)."""
        ...

    def ensure(self, directory: str, renew: bool = False) -> bool:
        """Watch ``directory`` (if it is not yet); False when it is not watched (poll it). Runs on the source's
        worker thread; a directory that failed is tried again now and then, not at every call. ``renew``: the
        path names another directory than before (deleted and made again): watch that one."""
        ...

    def retain(self, wanted: set[str]) -> None:
        """Stop watching the directories not in ``wanted``."""
        ...

    def watched(self) -> list[str]:
        ...

    def unwatched(self) -> list[str]:
        """Directories asked for that are not watched (polled instead)."""
        ...

    def close(self) -> None:
        ...
