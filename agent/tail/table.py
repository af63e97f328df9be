"""The streams a source follows, their indexes, and the descriptor budget (``max_open_files``).

One place keeps the indexes consistent: every stream is in ``streams`` and (while it owns its identity) in
``by_id``; ``by_path`` is rebuilt by each discovery. ``ready`` and ``attention`` say which streams a cycle
looks at, so a cycle never walks every stream: ``ready`` has news (an inotify hint, a changed size),
``attention`` needs a look every cycle whatever the events say (draining, failing, a pending multiline record,
waiting for a descriptor).
"""

from __future__ import annotations

import contextlib
import os

from agent.tail.stats import TailStats
from agent.tail.stream import Stream

Ident = tuple[int, int]


class StreamTable:
    def __init__(self, max_open_files: int, stats: TailStats) -> None:
        self.max_open_files = max_open_files
        self.stats = stats
        self.streams: dict[Stream, None] = {}  # insertion-ordered set
        self.by_id: dict[Ident, Stream] = {}
        self.by_path: dict[str, Stream] = {}
        self.ready: dict[Stream, None] = {}
        self.attention: dict[Stream, None] = {}
        self.waiting: dict[str, bool] = {}
        """Paths that matched but wait for a free descriptor -> whether to start at their end."""
        self.open: dict[Stream, None] = {}
        """Streams holding a descriptor (what eviction looks at: never more than ``max_open_files`` or so)."""
        self.unsaved: dict[Stream, None] = {}
        """Streams opened at their end (``start_at: end``) whose first checkpoint is not handed out yet: the
        core hands them out a slice per cycle, so 100,000 files opened at once do not make 100,000 batches
        at once (memory), and the first scan does not compete with the pipeline committing them."""
        self.behind: dict[Stream, None] = {}
        """Streams with bytes on disk not handed on (size > consumed), kept up to date by the worker, so
        status and the agent's self-watch never walk every stream."""
        self.newest_ns = 0
        self.newest_path = ""
        """The latest mtime the worker saw on a stream, and its path (what "last written to" says)."""
        self.paths_version = 0
        """Changes whenever ``by_path`` does (the watcher thread's snapshot is rebuilt only then)."""

    @property
    def open_count(self) -> int:
        return len(self.open)

    def __contains__(self, stream: Stream) -> bool:
        return stream in self.streams

    def add(self, stream: Stream) -> None:
        self.streams[stream] = None
        self.by_id[stream.ident] = stream
        self.track(stream)

    def track(self, stream: Stream) -> None:
        """After a stream's size or position changed: is it behind?"""
        if stream.size > stream.consumed:
            self.behind[stream] = None
        else:
            self.behind.pop(stream, None)
        if stream.mtime_ns > self.newest_ns:
            self.newest_ns, self.newest_path = stream.mtime_ns, stream.path

    def unindex(self, stream: Stream) -> None:
        """Forget the stream's identity (it is about to take a new one, or is gone)."""
        self.streams.pop(stream, None)
        if self.by_id.get(stream.ident) is stream:
            del self.by_id[stream.ident]

    def remove(self, stream: Stream) -> None:
        self.unindex(stream)
        self.ready.pop(stream, None)
        self.attention.pop(stream, None)
        self.behind.pop(stream, None)
        self.unsaved.pop(stream, None)
        for path in (stream.path, stream.real):
            if path and self.by_path.get(path) is stream:
                del self.by_path[path]
                self.paths_version += 1

    def followed_at(self, path: str) -> Stream | None:
        """The stream indexed at ``path`` if it still owns its identity."""
        stream = self.by_path.get(path)
        if stream is not None and self.by_id.get(stream.ident) is stream:
            return stream
        return None

    def index_path(self, stream: Stream, path: str, index: dict[str, Stream] | None = None) -> None:
        target = self.by_path if index is None else index
        target[path] = stream
        if stream.real:
            target.setdefault(stream.real, stream)
        self.paths_version += 1

    def unindex_path(self, path: str, stream: Stream) -> None:
        """``path`` no longer leads to ``stream`` (nor does its real path, when that differs)."""
        for p in (path, stream.real):
            if p and self.by_path.get(p) is stream:
                del self.by_path[p]
                self.paths_version += 1

    # --- descriptors ------------------------------------------------------------------------------------

    def opened(self, stream: Stream, fd: int) -> None:
        stream.fd = fd
        self.open[stream] = None
        self.stats.files_opened += 1

    def close_fd(self, stream: Stream) -> None:
        if stream.fd is not None:
            with contextlib.suppress(OSError):
                os.close(stream.fd)
            stream.fd = None
            self.open.pop(stream, None)
            self.stats.files_closed += 1

    def make_room(self) -> bool:
        """Keep open descriptors under ``max_open_files`` by closing the least recently active idle file."""
        if self.open_count < self.max_open_files:
            return True
        return self.evict_one()

    def over_budget(self) -> bool:
        return self.open_count > self.max_open_files

    def evict_one(self, exclude: Stream | None = None) -> bool:
        """Close fully read, not draining files (re-opened by path on their next change), LRU first.

        Closes an eighth of the budget at once, and looks only at the streams holding a descriptor, so opening
        100,000 files costs O(max_open_files) per batch of evictions, not a walk of every stream.
        """
        idle = [
            f
            for f in self.open
            if f.fd is not None
            and f is not exclude
            and not f.draining
            and f.read_end >= f.size
            and f not in self.ready
        ]
        if not idle:
            return False
        idle.sort(key=lambda f: f.last_activity)
        for f in idle[: max(1, self.max_open_files // 8)]:
            self.close_fd(f)
        return True

    def close_all(self) -> None:
        for stream in list(self.streams):
            self.close_fd(stream)
