"""What a source needs of a watcher backend: keep these directories watched, say how events arrive.

Two backends sit behind this interface (like Fluent Bit's ``tail_fs_inotify.c`` / ``tail_fs_stat.c``):
``inotify`` (events as hints, with a slow periodic rescan as the safety net) and ``polling`` (no events; the
source rescans every ``poll_interval``). Either way the data is the same; only its latency differs.
"""

from __future__ import annotations

from typing import Protocol

from agent.tail.scan import WatchSpec


class Watch(Protocol):
    mode: str
    """"inotify" or "polling" (shown in /status)."""
    error: str | None
    """Why events are not available (polling), or the last trouble the backend had."""

    @property
    def event_driven(self) -> bool:
        """True while changes arrive as events (rescans may then be rare)."""
        ...

    def sync(self, wanted: set[WatchSpec]) -> bool:
        """Watch exactly ``wanted``; True when a watch was added (it arms asynchronously: look closer for a
        moment). Runs on the source's worker thread."""
        ...

    def watched(self) -> list[str]:
        ...

    def close(self) -> None:
        ...
