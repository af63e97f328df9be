"""The polling backend: no events at all; the source's periodic stat() reconciliation finds every change."""

from __future__ import annotations

from agent.tail.scan import WatchSpec


class PollingWatch:
    mode = "polling"

    def __init__(self, reason: str) -> None:
        self.error: str | None = reason

    @property
    def event_driven(self) -> bool:
        return False

    def sync(self, wanted: set[WatchSpec]) -> bool:
        return False

    def watched(self) -> list[str]:
        return []

    def close(self) -> None:
        pass
