"""Discovery: match what the globs find now against the streams, restored checkpoints and new files.

Four steps, in this order, each a method: streams (and restored checkpoints) found again by identity; streams
no glob matches any more (rotated away: drain, or find them renamed); restored checkpoints not found under
any glob (rotated while the agent was stopped); new files. Runs on the source's worker thread.
"""

from __future__ import annotations

import os
from typing import Any

import structlog

from agent.source import Checkpoint
from agent.tail import checkpoint
from agent.tail.config import TailConfig
from agent.tail.emit import Emitter
from agent.tail.opening import StreamOpener
from agent.tail.problems import FileProblems
from agent.tail.rotation import Rotation
from agent.tail.scan import Ident, Scanner, ScanResult
from agent.tail.siblings import Siblings
from agent.tail.stream import FileStat, Stream, real_path
from agent.tail.table import StreamTable

log = structlog.get_logger(__name__)

DEEP_EVERY = 6
"""While inotify works, every 6th rescan stat()s every file (the others only list directories)."""


class Discovery:
    def __init__(self, config: TailConfig, checkpoints: dict[str, Checkpoint], *, is_first_start: bool,
                 scanner: Scanner, table: StreamTable, problems: FileProblems, emitter: Emitter,
                 opener: StreamOpener, rotation: Rotation, siblings: Siblings) -> None:
        self.config = config
        self.scanner = scanner
        self.table = table
        self.problems = problems
        self.emitter = emitter
        self.opener = opener
        self.rotation = rotation
        self.siblings = siblings
        self.first_scan_done = False
        self.deep_requested = False
        """The next discovery stat()s every file (events were lost, or new watches are arming)."""
        self.births = False
        """A new identity appeared at a watched name since the unread siblings were last looked for."""
        self.unresolved: list[Stream] = []
        """Restored checkpoints not matched to a file yet."""
        self._first_start = is_first_start
        self._forget: list[Checkpoint] = []
        self._scans = 0
        for ckpt in checkpoints.values():
            restored = checkpoint.decode(config.name, ckpt)
            if restored is None:
                self._forget.append(ckpt)
            else:
                self.unresolved.append(restored)

    def known(self) -> set[Ident]:
        """Identities of restored checkpoints: never to be read from 0 as if new."""
        return {f.ident for f in self.unresolved}

    def run(self, now: float, *, event: bool, event_driven: bool) -> None:
        initial = not self.first_scan_done
        self._scans += 1
        if not event_driven or self.deep_requested or initial or self._scans % DEEP_EVERY == 0:
            mode = "deep"
        else:
            mode = "light" if event else "cached"
        self.deep_requested = False
        result = self.scanner.scan(mode, self.table.followed_at)
        self.problems.settle(result.problems, result.seen)
        for ckpt in self._forget:
            log.warning("tail.checkpoint_unusable", source=self.config.name, key=ckpt.key)
            self.emitter.forget(ckpt.key, ckpt.state)
        self._forget = []
        index: dict[str, Stream] = {}
        new = self._find_followed(result, index, now)
        if not result.incomplete:
            # a directory that could not be listed (out of descriptors) says nothing about its files: ending
            # their streams would forget their positions and read them again from 0 later
            self._end_unmatched(result, now)
            self._resolve_restored(now)
        else:
            index.update({p: f for p, f in self.table.by_path.items() if p not in index})
        self._open_new(new, index, now, at_end=initial and self._first_start and self.config.start_at == "end")
        self.table.by_path = index
        if initial:
            self.siblings.baseline()
        self.first_scan_done = True

    def _find_followed(self, result: ScanResult, index: dict[str, Stream], now: float
                       ) -> list[tuple[str, FileStat | None]]:
        """Streams we follow (and restored checkpoints) found again by identity; the rest is new."""
        new: list[tuple[str, FileStat | None]] = []
        for ident, (path, st) in result.matched.items():
            f = self.table.by_id.get(ident)
            if f is None and self.unresolved:
                f = self.opener.adopt_restored(ident, path, self.unresolved, now)
            if f is None:
                new.append((path, st))
                continue
            if f.path != path:
                f.path = path
                f.real = real_path(path)
            if f.draining:
                f.draining, f.drain_reason, f.idle_since = False, "", None
            self.table.index_path(f, path, index)
            if st is not None and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                self.table.ready[f] = None  # changed (a closed file is re-opened only then)
        return new

    def _end_unmatched(self, result: ScanResult, now: float) -> None:
        """Streams no glob matches any more: rotated away, deleted, symlink retargeted."""
        matched: dict[Ident, Any] = result.matched
        for f in list(self.table.streams):
            if f.ident in matched or f.draining:
                continue
            if f.fd is None:
                if not self.rotation.relocate(f, now):
                    self.table.attention[f] = None  # retried next cycle
            else:
                self.rotation.start_draining(f, "rotated or deleted")

    def _resolve_restored(self, now: float) -> None:
        """Restored checkpoints not found under any glob: rotated while we were stopped."""
        still: list[Stream] = []
        for f in self.unresolved:
            if f.path in self.problems or not self.rotation.relocate(f, now):
                still.append(f)  # e.g. permission denied, out of descriptors: keep the checkpoint, retry later
        self.unresolved = still

    def _open_new(self, new: list[tuple[str, FileStat | None]], index: dict[str, Stream], now: float, *,
                  at_end: bool) -> None:
        for path, st in new:
            if st is None:  # identity from a cached listing, but not followed yet (e.g. it failed to open)
                try:
                    st = FileStat(os.stat(path))
                except OSError:
                    continue
            if (st.st_dev, st.st_ino) in self.table.by_id:
                continue
            f = self.opener.open_new(path, now, at_end=at_end)
            if f is not None:
                self.table.index_path(f, path, index)
                self.births = self.first_scan_done  # a new identity at a watched name: a rotation happened
