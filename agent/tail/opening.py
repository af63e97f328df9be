"""Opening streams: new files, restored checkpoints verified against the file found, and re-opens after a
descriptor was given back to stay under ``max_open_files``."""

from __future__ import annotations

import contextlib
import os
import stat as statmod
from typing import Literal

import structlog

from agent.fileid import pread_exact
from agent.tail.config import TailConfig
from agent.tail.emit import Emitter
from agent.tail.identity import OPEN_FLAGS, holds_content
from agent.tail.problems import FileProblems
from agent.tail.stream import GUARD_BYTES, Stream, device, guard_before, real_path
from agent.tail.table import Ident, StreamTable

log = structlog.get_logger(__name__)

Reopened = Literal["open", "wait", "lost"]


class StreamOpener:
    def __init__(self, config: TailConfig, table: StreamTable, problems: FileProblems, emitter: Emitter) -> None:
        self.config = config
        self.table = table
        self.problems = problems
        self.emitter = emitter
        self._log = log.bind()  # logging is configured before sources are made: 100,000 opens, one bind
    def try_open(self, path: str) -> int | None:
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.set(path, f"open: {exc.strerror or exc}")
            return None
        self.problems.clear(path)
        return fd

    def open_new(self, path: str, now: float, *, at_end: bool) -> Stream | None:
        """Follow a file not followed yet (from its end on a first start with ``start_at: end``)."""
        table = self.table
        if not table.make_room():
            table.waiting[path] = at_end
            return None
        table.waiting.pop(path, None)
        fd = self.try_open(path)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in table.by_id:
                os.close(fd)
                return None
            f = self._stream_on(path, fd, st, now)
            if at_end and st.st_size > 0:
                position, skipping = self._end_position(fd, st.st_size, f.head)
                f.consumed = f.read_end = position
                f.skipping_long_line = skipping
                # a small file ends where its head does: the guard is the same bytes, share the object
                head = f.head
                f.guard = head if head and len(head) == position <= GUARD_BYTES else guard_before(f, position)
                table.unsaved[f] = None  # its checkpoint goes out soon, a slice per cycle (see TailCore)
            table.add(f)
            if f.read_end < st.st_size or f.skipping_long_line:
                table.ready[f] = None
            self._log.info("tail.file_opened", source=self.config.name, path=path, offset=f.consumed)
            return f
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            self.problems.set(path, f"open: {exc.strerror or exc}")
            return None

    def follow_from_start(self, path: str, fd: int, now: float, known: set[tuple[int, int]], how: str
                          ) -> Stream | None:
        """A new stream read from 0 on an open descriptor (a file opened as it appeared under a watched name,
        a generation found rotated unread). None (descriptor closed) when its identity is followed already or
        ``known`` (a restored checkpoint)."""
        table = self.table
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if not statmod.S_ISREG(st.st_mode) or ident in table.by_id or ident in known or not table.make_room():
                os.close(fd)
                return None
        except OSError:
            with contextlib.suppress(OSError):
                os.close(fd)
            return None
        f = self._stream_on(path, fd, st, now)
        table.add(f)
        table.ready[f] = None
        log.info("tail.file_opened", source=self.config.name, path=path, offset=0, how=how)
        return f

    def _stream_on(self, path: str, fd: int, st: os.stat_result, now: float) -> Stream:
        """A new stream for the file open on ``fd`` (read from 0 unless told otherwise)."""
        f = Stream(path=path, dev=device(st.st_dev), ino=st.st_ino, real=real_path(path, fd))
        self.table.opened(f, fd)
        # no more than the file holds (a short read would cost a second pread to see the end: 100,000 files);
        # bytes written since the fstat() are taken in as the head grows (identity.rewritten)
        f.head = pread_exact(fd, min(self.config.fingerprint_bytes, st.st_size), 0)
        f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        f.last_activity = now
        return f

    def open_waiting(self, now: float) -> None:
        """Files that waited for a descriptor, while there is room."""
        table = self.table
        for path, at_end in list(table.waiting.items()):
            if not table.make_room():
                return
            table.waiting.pop(path, None)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in table.by_id:
                continue
            f = self.open_new(path, now, at_end=at_end)
            if f is not None:
                table.index_path(f, path)

    def _end_position(self, fd: int, size: int, head: bytes | None = None) -> tuple[int, bool]:
        """Where ``start_at: end`` starts: after the last newline, so a half-written last line is not cut."""
        window = min(size, self.config.max_line_bytes + 1)
        if head is not None and len(head) >= size:
            chunk = head[size - window:size]  # the whole file is its head: no second read
        else:
            chunk = pread_exact(fd, window, size - window)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return size - window + nl + 1, False
        if window < size:  # the last line is already over-long: skip the rest of it
            return size, True
        return 0, False

    def adopt_restored(self, ident: Ident, path: str, unresolved: list[Stream], now: float) -> Stream | None:
        """A restored checkpoint whose identity is at ``path`` and whose content verifies: follow it."""
        candidates = [f for f in unresolved if f.ident == ident]
        if not candidates:
            return None
        fd = self.try_open(path)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != ident:
                os.close(fd)
                return None
            for f in candidates:
                if holds_content(fd, st, f):
                    unresolved.remove(f)
                    self.attach(f, fd, st, path, now)
                    return f
        except OSError:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def attach(self, f: Stream, fd: int, st: os.stat_result, path: str, now: float) -> None:
        """Make a restored (or relocated) stream live on ``fd`` after its content was verified."""
        table = self.table
        table.opened(f, fd)
        f.path = path
        f.real = real_path(path, fd)
        f.dev, f.ino = device(st.st_dev), st.st_ino
        f.head = pread_exact(fd, self.config.fingerprint_bytes, 0)
        if not f.guard:
            f.guard = guard_before(f, f.consumed)
        f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        f.last_activity = now
        table.add(f)
        table.ready[f] = None
        if table.over_budget() and not table.evict_one(exclude=f):
            table.close_fd(f)  # verified; re-opened by path when a descriptor frees up

    def reopen(self, f: Stream, now: float) -> Reopened:
        """Re-open a stream closed to respect ``max_open_files``: "lost" when it was rotated meanwhile."""
        table = self.table
        if not table.make_room():
            table.attention[f] = None  # retried every poll_interval; not "busy" (that would spin)
            return "wait"
        fd = self.try_open(f.path)
        if fd is None:
            return "wait" if f.path in self.problems else "lost"
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != f.ident:
            os.close(fd)
            return "lost"
        table.opened(f, fd)
        f.last_activity = now
        return "open"
