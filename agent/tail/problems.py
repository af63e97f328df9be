"""Files the source should read but cannot (permission denied, a dangling symlink, an open that fails).

Kept by path, not by stream: such a file has no stream yet. Each problem is logged once when it appears and
once when it clears, and shows in ``/status`` until then.
"""

from __future__ import annotations

from collections.abc import Container

import structlog

from agent.tail.stats import TailStats
from agent.tail.stream import Stream

log = structlog.get_logger(__name__)


class FileProblems:
    def __init__(self, source: str, stats: TailStats) -> None:
        self.source = source
        self.stats = stats
        self.by_path: dict[str, str] = {}

    def __contains__(self, path: str) -> bool:
        return path in self.by_path

    def __bool__(self) -> bool:
        return bool(self.by_path)

    def set(self, path: str, message: str) -> None:
        if self.by_path.get(path) != message:
            self.by_path[path] = message
            self.stats.errors += 1
            log.warning("tail.file_error", source=self.source, path=path, error=message)

    def clear(self, path: str) -> None:
        if self.by_path.pop(path, None) is not None:
            log.info("tail.file_recovered", source=self.source, path=path)

    def settle(self, found: dict[str, str], seen: Container[str]) -> None:
        """After a scan: record what it found; clear what it no longer finds (an open error stays while the
        file is still there, since only opening it again can clear it)."""
        for path, message in found.items():
            self.set(path, message)
        for path in list(self.by_path):
            if path in found:
                continue
            if not self.by_path[path].startswith("open:") or path not in seen:
                self.clear(path)

    def stream_error(self, stream: Stream, exc: Exception) -> None:
        """A stream failed to read: shown on the stream, retried every poll interval."""
        message = f"{type(exc).__name__}: {exc}"
        if stream.last_error != message:
            stream.last_error = message
            self.stats.errors += 1
            log.warning("tail.read_error", source=self.source, path=stream.path, error=message)
