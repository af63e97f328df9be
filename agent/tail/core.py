"""One synchronous tailing cycle of a file source: discovery if due, one chunk per ready stream, housekeeping.

Everything here runs on the source's one worker thread, and only there: streams, indexes, descriptors and
counters are never touched by another thread (the event loop only reads ``status()`` and the counters, as
snapshots). Changes from outside arrive as :class:`Hints` with the next cycle. A cycle returns the batches it
produced, whether more is ready right now, and when it wants to run again; it never sleeps itself.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any

import structlog

from agent.fileid import fingerprint, pread_exact
from agent.source import Checkpoint
from agent.tail import checkpoint
from agent.tail.compressed import unpack_whole
from agent.tail.config import TailConfig
from agent.tail.discovery import Discovery
from agent.tail.emit import Emission, Emitter
from agent.tail.globs import PathFilter
from agent.tail.identity import rewritten
from agent.tail.opening import StreamOpener
from agent.tail.problems import FileProblems
from agent.tail.reader import LineReader
from agent.tail.rotation import Rotation
from agent.tail.safety import SafetyNet
from agent.tail.scan import Scanner
from agent.tail.siblings import Siblings
from agent.tail.stats import TailStats
from agent.tail.stream import Stream, current_path
from agent.tail.table import StreamTable
from agent.tail.watch import HintBox, Hints, InotifyHub, PollingWatch, Watch, open_watch

log = structlog.get_logger(__name__)

CHECKPOINT_SLICE = 2000
"""First checkpoints of files skipped to their end handed out per cycle at most."""


@dataclass(slots=True)
class CycleResult:
    emitted: list[Emission]
    busy: bool
    """More is ready to read now: run the next cycle at once."""
    deadline: float
    """Monotonic time of the next cycle when no hint comes first."""


class TailCore:
    def __init__(self, config: TailConfig, checkpoints: dict[str, Checkpoint], *, is_first_start: bool,
                 stats: TailStats) -> None:
        self.config = config
        self.stats = stats
        self.paths = PathFilter(config.paths, config.exclude_paths)
        self.box = HintBox(self.paths)
        """Hints from watcher threads; the event loop takes them and passes them to :meth:`cycle`."""
        self.scanner = Scanner(self.paths)
        self.table = StreamTable(config.max_open_files, stats)
        self.problems = FileProblems(config.name, stats)
        self.emitter = Emitter(config.name, checkpoint.StreamKeys(set(checkpoints)), stats)
        self.reader = LineReader(config, stats)
        self.opener = StreamOpener(config, self.table, self.problems, self.emitter)
        self.siblings = Siblings(self.paths, config.fingerprint_bytes, config.rotated_paths)
        self.rotation = Rotation(config, self.table, self.opener, self.reader, self.emitter, stats,
                                 known=lambda: self.discovery.known(), siblings=self.siblings)
        self.discovery = Discovery(config, checkpoints, is_first_start=is_first_start, scanner=self.scanner,
                                   table=self.table, problems=self.problems, emitter=self.emitter,
                                   opener=self.opener, rotation=self.rotation, siblings=self.siblings)
        self.watch: Watch = PollingWatch("not started")
        self.scanner.ensure_watched = self._ensure_watched
        self.stopping = False
        """Set by the event loop when the source stops: a cycle then does nothing."""
        self.net = SafetyNet(self.table, self.scanner)
        self._next_rescan = self._last_scan = self._next_sweep = 0.0
        self._synced: tuple[int, int, tuple[str, ...]] = (-1, -1, ())
        self._published: object = None
        self._extra_watched: set[str] = set()

    @property
    def first_scan_done(self) -> bool:
        return self.discovery.first_scan_done

    @property
    def unresolved_count(self) -> int:
        """Restored checkpoints not matched to a file yet."""
        return len(self.discovery.unresolved)

    def start_watching(self, hub: InotifyHub | None, polling_only: bool) -> None:
        self.watch = open_watch(hub, self.box, polling_only=polling_only, source=self.config.name)
        if not self.watch.event_driven and not polling_only:
            log.warning("tail.inotify_fallback", source=self.config.name, reason=self.watch.error)

    def _ensure_watched(self, directory: str, renew: bool) -> bool:
        return self.watch.ensure(directory, renew)

    # --- the cycle -------------------------------------------------------------------------------------

    def cycle(self, hints: Hints) -> CycleResult:
        """One unit of blocking work; an unexpected error is logged and retried, never ends the source."""
        try:
            return self._cycle(hints)
        except Exception:
            self.stats.errors += 1
            log.exception("tail.cycle_failed", source=self.config.name)
            self.box.rescan()
            return CycleResult(self.emitter.take(), False, time.monotonic() + self.config.poll_interval)

    def _cycle(self, hints: Hints) -> CycleResult:
        now = time.monotonic()
        if self.stopping:
            for _path, fd in hints.pinned:
                os.close(fd)
            return CycleResult([], False, now + 3600)
        if hints.overflowed:
            self.stats.overflow_rescans += 1
            self.discovery.deep_requested = True
            self.watch.error = "inotify queue overflowed (events lost; rescanned)"
        if hints.pinned:
            self._adopt_pinned(hints.pinned, now)
        rescan = hints.rescan or hints.overflowed
        due = now >= self._next_rescan
        if rescan or not self.first_scan_done or due:
            self.discovery.run(now)
            if self.discovery.full_requested:
                self.box.rescan()  # the delta could not settle something: a full scan now, not in 10 s
            self._sync_watches()
            self._last_scan = now
            self.net.poll_unwatched()
            if now >= self._next_sweep:
                self._next_sweep = now + self.config.rescan_interval
                self.net.check_slice()
        if (hints.births or self.discovery.births) and self.first_scan_done and self.siblings.active:
            self._follow_unread_siblings(now)
        self._next_rescan = self._last_scan + self._rescan_interval(now)
        table = self.table
        for path in hints.changed:
            f = table.by_path.get(path)
            if f is not None:
                table.ready[f] = None
        if table.waiting:
            self.opener.open_waiting(now)
        self._read_ready(now)
        if table.unsaved:
            self._save_skipped(CHECKPOINT_SLICE)
        return CycleResult(self.emitter.take(), bool(table.ready or table.unsaved), self._deadline(now))

    def _save_skipped(self, limit: int) -> None:
        """First checkpoints of files opened at their end (``start_at: end``), ``limit`` at most."""
        table, emit = self.table, self.emitter.emit
        for f in list(itertools.islice(table.unsaved, limit)):
            del table.unsaved[f]
            if f in table:
                emit(f, [], None)  # nothing, if lines of it went out meanwhile (their checkpoint is later)
        if not table.unsaved:
            table.unsaved = {}  # a dict keeps its size after deletions: 100,000 slots for nothing

    def _adopt_pinned(self, pinned: list[tuple[str, int]], now: float) -> None:
        """Files opened by the event thread as they appeared. One already renamed to a name no glob matches
        (an application rotating fast) is read whole through its descriptor and then finished."""
        known = self.discovery.known()
        for path, fd in pinned:
            f = self.opener.follow_from_start(path, fd, now, known, "as it appeared")
            if f is None:
                continue
            f.path = current_path(fd) or f.path
            if not self.paths.included(f.path):
                self.rotation.start_draining(f, "renamed before it was opened")
            else:
                self.table.index_path(f, f.path)

    def _follow_unread_siblings(self, now: float) -> None:
        """Generations renamed away before the source ever opened them (see agent/tail/siblings.py)."""
        self.discovery.births = False
        table = self.table
        known = self.discovery.known()
        fp_bytes = self.config.fingerprint_bytes

        def heads() -> set[str]:
            # read now: a stream opened as its file appeared has the (empty) head of that moment
            return {fingerprint(pread_exact(f.fd, fp_bytes, 0)) for f in table.streams if f.fd is not None}

        for path, fd, compressed in self.siblings.unread(set(table.by_id) | known, heads):
            how = "a generation renamed unread"
            if compressed:  # rotated and compressed before it was ever read: read it whole from the archive
                os.close(fd)
                unpacked = unpack_whole(path)
                if unpacked is None:
                    continue
                fd, how = unpacked, "a generation compressed unread"
            f = self.opener.follow_from_start(path, fd, now, known, how)
            if f is not None:
                self.rotation.start_draining(f, "renamed before it was opened")

    def _rescan_interval(self, now: float) -> float:
        """Slow safety net while events arrive; poll_interval without them, for directories that could not be
        watched, or while something is retried."""
        config = self.config
        interval = config.rescan_interval if self.watch.event_driven else config.poll_interval
        if self.problems or self.table.waiting or self.discovery.unresolved or self.net.has_unwatched():
            interval = min(interval, config.poll_interval)
        return interval

    def _read_ready(self, now: float) -> None:
        table = self.table
        todo = dict(table.ready)
        table.ready = {}
        for f in list(table.attention):
            if f not in table or not self._needs_attention(f):
                table.attention.pop(f, None)
            else:
                todo[f] = None
        budget = 4 * self.config.read_chunk_bytes
        while True:
            before = budget
            for f in todo:
                if f not in table:
                    continue
                if budget <= 0:
                    table.ready[f] = None
                    continue
                try:
                    budget -= self._service(f, now)
                except Exception as exc:  # never let one bad file stop the others
                    table.attention[f] = None
                    self.problems.stream_error(f, exc)
                if f in table:
                    table.track(f)
            # Files still behind get another turn (a chunk each, round robin) while the budget lasts: every
            # cycle is a round trip through the event loop, and a backlog read one 1 MiB chunk per cycle
            # spent more time in those trips than in reading (200 MiB: 0.9 s -> 0.7 s to the last event).
            if budget <= 0 or budget == before or not table.ready:
                break
            todo = dict(table.ready)
            table.ready = {}

    def _deadline(self, now: float) -> float:
        config = self.config
        deadline = self._next_rescan
        retry = bool(not self.watch.event_driven or self.problems or self.table.waiting)
        assembler = self.reader.assembler
        for f in self.table.attention:
            if f.draining:
                deadline = min(deadline, now + min(config.poll_interval, max(config.rotate_wait, 0.05)))
            if f.record and assembler is not None:
                deadline = min(deadline, assembler.deadline(f))
            if f.last_error is not None or f.fd is None:
                retry = True
        if retry:
            deadline = min(deadline, now + config.poll_interval)
        return deadline

    def _needs_attention(self, f: Stream) -> bool:
        return (f.draining or f.last_error is not None or (bool(f.record) and self.reader.assembler is not None)
                or (f.fd is None and f in self.table.attention))

    # --- one stream ------------------------------------------------------------------------------------

    def _service(self, f: Stream, now: float) -> int:
        """Check one stream for truncation/deletion, read one chunk, flush timeouts, finish if drained."""
        if f.fd is None:
            reopened = self.opener.reopen(f, now)
            if reopened == "lost" and not self.rotation.relocate(f, now):
                self.table.attention[f] = None  # could not search (out of descriptors): next cycle
            if reopened != "open":
                return 0
        assert f.fd is not None
        st = os.fstat(f.fd)
        if st.st_nlink == 0 and not f.draining:
            self.rotation.start_draining(f, "deleted")
        if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            if rewritten(f, st, self.config.fingerprint_bytes):
                self.rotation.restart_truncated(f, now)
            f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        if not f.copies_checked and f.head:
            # The first content since a copytruncate restart: had the file been rotated again while still
            # empty, that rotation left no trace in it, only a copy of a generation never read.
            f.copies_checked = True
            self.rotation.follow_later_generations(f, "", f.copied_until_ns, None, now)
        lines: Any = []
        data: bytes | None = None
        n = 0
        if f.read_end < st.st_size:
            lines, data, n = self.reader.read(f, st.st_size, now)
            if f.read_end < st.st_size:
                self.table.ready[f] = None
        if f.record:
            self.table.attention[f] = None
        if f.last_error is not None and n:
            f.last_error = None
        assembler = self.reader.assembler
        if assembler is not None and assembler.timed_out(f, now) and f.read_end >= st.st_size:
            lines = [*lines, *assembler.take(f)]
        if f.draining and f.read_end >= st.st_size:
            if n or f.idle_since is None:
                f.idle_since = now
            if now - f.idle_since >= self.config.rotate_wait:
                self.rotation.finish(f, lines)
                return n
        elif f.draining:
            f.idle_since = None
        self.emitter.emit(f, lines, data)
        return n

    # --- discovery -------------------------------------------------------------------------------------

    def _sync_watches(self) -> None:
        """Watch what the scanner visits (it asked for each directory before listing it), the nearest existing
        ancestors of glob bases that do not exist yet (to see them appear) and the directories of symlink
        targets; stop watching the rest. Only when one of those changed: an idle source does nothing here."""
        table, scanner = self.table, self.scanner
        missing = tuple(scanner.missing)
        state = (scanner.dirs_version, table.paths_version, missing)
        if state != self._synced:
            self._synced = state
            extra = set(missing)
            for f in table.streams:
                real = f.real
                if real and real is not f.path and real != f.path:
                    extra.add(os.path.dirname(real))
            added = False
            for directory in extra:
                added |= self.watch.ensure(directory) and directory not in self._extra_watched
            self._extra_watched = extra
            self.watch.retain(scanner.directories() | extra)
            if added:
                self.box.rescan()  # a symlink target's directory: what changed before the watch was there
        if table.by_path is not self._published:
            self._published = table.by_path
            self.box.publish_followed(table.by_path)

    # --- the end ---------------------------------------------------------------------------------------

    def final_records(self, undelivered: set[Stream]) -> list[Emission]:
        """At shutdown: pending multiline records of streams whose every batch reached the queue (otherwise a
        restart re-reads from the last committed checkpoint anyway, and handing the record out would skip
        the lost lines). Partial last lines are never handed out: their checkpoint stays before them. Nor are
        container records split by their runtime (``Stream.partial``): their final part is still to be
        written, and the restart rebuilds them from their first part, where the checkpoint stays."""
        self._save_skipped(len(self.table.unsaved))  # else a restart would read them from their beginning
        assembler = self.reader.assembler
        for f in list(self.table.streams):
            if f.record and assembler is not None and f not in undelivered and f.checkpoint_pos == f.record_start:
                self.emitter.emit(f, assembler.take(f), None)
        return self.emitter.take()

    def release(self) -> None:
        """Close every descriptor and stop watching; idempotent."""
        self.box.close()
        self.watch.close()
        self.table.close_all()
        for f in self.discovery.unresolved:
            self.table.close_fd(f)
