"""Discovery: match what the globs find now against the streams, restored checkpoints and new files.

Two ways, one meaning. A ``deep`` or ``full`` scan names every matching file, and discovery rebuilds its
indexes from it in four steps, each a method: streams (and restored checkpoints) found again by identity;
streams no glob matches any more (rotated away: drain, or find them renamed); restored checkpoints not found
under any glob (rotated while the agent was stopped); new files. An ``incremental`` scan names only what
changed since the last one (``came``, ``gone``), and :meth:`Discovery._apply` takes the same four steps for
those paths alone, so an idle source with 100,000 files does no work per file. A change the delta cannot
settle by itself (a stream that lost its indexed name but is still reached by another: a hard link) asks for
a ``full`` scan next. Runs on the source's worker thread.
"""

from __future__ import annotations

from typing import Any

import structlog

from agent.source import Checkpoint
from agent.tail import checkpoint
from agent.tail.config import TailConfig
from agent.tail.emit import Emitter
from agent.tail.opening import StreamOpener
from agent.tail.problems import FileProblems
from agent.tail.rotation import Rotation
from agent.tail.scan import Ident, ScanMode, Scanner, ScanResult
from agent.tail.siblings import Siblings
from agent.tail.stream import FileStat, Stream, real_path
from agent.tail.table import StreamTable

log = structlog.get_logger(__name__)



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
        """The next discovery lists every directory again and stat()s every file (events were lost)."""
        self.full_requested = False
        """The next discovery rebuilds its indexes from every matching file (the delta could not settle)."""
        self.births = False
        """A new identity appeared at a watched name since the unread siblings were last looked for."""
        self.unresolved: list[Stream] = []
        """Restored checkpoints not matched to a file yet."""
        self._first_start = is_first_start
        self._forget: list[Checkpoint] = []
        self.last_mode: ScanMode | None = None
        for ckpt in checkpoints.values():
            restored = checkpoint.decode(config.name, ckpt)
            if restored is None:
                self._forget.append(ckpt)
            else:
                self.unresolved.append(restored)

    def known(self) -> set[Ident]:
        """Identities of restored checkpoints: never to be read from 0 as if new."""
        return {f.ident for f in self.unresolved}

    def run(self, now: float) -> ScanResult:
        initial = not self.first_scan_done
        if initial and not self.unresolved and not self.deep_requested:
            # nothing to find again: identities from the directory entries, each checked by the fstat() of
            # its open (not a stat() of 100,000 files first)
            mode: ScanMode = "full"
        elif initial or self.deep_requested:
            mode = "deep"
        elif self.full_requested:
            mode = "full"
        else:
            mode = "incremental"
        self.deep_requested = self.full_requested = False
        self.last_mode = mode
        result = self.scanner.scan(mode)
        for ckpt in self._forget:
            log.warning("tail.checkpoint_unusable", source=self.config.name, key=ckpt.key)
            self.emitter.forget(ckpt.key, ckpt.state)
        self._forget = []
        if mode == "incremental":
            self._apply(result, now)
            return result
        self.problems.settle(result.problems, _Holds(self.scanner))
        index: dict[str, Stream] = {}
        matched, counts = result.matched, result.counts
        for f in self.table.streams:
            f.names = counts.get(f.ident, 1) if f.ident in matched else 0
        new = self._find_followed(result, index, now)
        if not result.incomplete:
            # a directory that could not be listed (out of descriptors) says nothing about its files: ending
            # their streams would forget their positions and read them again from 0 later
            self._end_unmatched(result, now)
            self._resolve_restored(now)
        else:
            index.update({p: f for p, f in self.table.by_path.items() if p not in index})
        self._open_new(new, index, now, at_end=initial and self._first_start and self.config.start_at == "end",
                       counts=result.counts, matched=result.matched)
        self.table.by_path = index
        self.table.paths_version += 1
        if initial:
            self.siblings.baseline()
        self.first_scan_done = True
        return result

    def _apply(self, result: ScanResult, now: float) -> None:
        """An incremental scan: the same four steps as a full one, for the paths that changed only."""
        table = self.table
        by_path = table.by_path
        candidates: list[Stream] = []
        for path, ident in result.gone:
            f = by_path.get(path)
            if f is None or f.ident != ident:
                f = table.by_id.get(ident)
            else:
                table.unindex_path(path, f)
            if f is not None:
                f.names = max(0, f.names - 1)
                candidates.append(f)
        new: list[tuple[str, FileStat | None]] = []
        for path, ident, st in result.came:
            f = table.by_id.get(ident)
            if f is None and self.unresolved:
                f = self.opener.adopt_restored(ident, path, self.unresolved, now)
                if f is not None:
                    f.names = 0
            if f is None:
                new.append((path, st))
                continue
            f.names += 1
            if by_path.get(f.path) is not f:  # its indexed name is gone: this is its name now
                f.path = path
                f.real = real_path(path)
            if f.draining:
                f.draining, f.drain_reason, f.idle_since = False, "", None
            table.index_path(f, path)
            if st is not None and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                table.ready[f] = None
        for _path, ident, st in result.touched:
            f = table.by_id.get(ident)
            if f is not None and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                table.ready[f] = None
        for f in candidates:
            if f not in table or f.draining or by_path.get(f.path) is f:
                continue
            if f.names > 0:
                self.full_requested = True  # still matched under a name the delta does not say: look at all
                continue
            if f.fd is None:
                if not self.rotation.relocate(f, now):
                    table.attention[f] = None  # retried next cycle
            else:
                self.rotation.start_draining(f, "rotated or deleted")
        if self.unresolved and not result.incomplete:
            self._resolve_restored(now)
        self._settle_problems(result)
        for path, message in list(self.problems.by_path.items()):
            # a file that failed to open (permission denied ...) is tried again at every scan while it matches
            if message.startswith("open:") and path not in by_path and self.scanner.holds(path):
                new.append((path, None))
        self._open_new(new, by_path, now, at_end=False)

    def _settle_problems(self, result: ScanResult) -> None:
        problems = self.problems
        for path, message in result.problems.items():
            problems.set(path, message)
        for path in list(problems.by_path):
            if path in result.problems:
                continue
            if problems.by_path[path].startswith("open:"):
                if not self.scanner.holds(path):
                    problems.clear(path)  # an open error stays while the file is there: only opening clears it
            elif path in result.checked or not self.scanner.holds(path):
                problems.clear(path)

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
            f.names = result.counts.get(ident, 1)  # (matched by construction)
            if f.path != path:
                f.path = path
                f.real = real_path(path)
            if f.draining:
                f.draining, f.drain_reason, f.idle_since = False, "", None
            self.table.index_path(f, f.path, index)  # f.path: the one string object for that path
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
                  at_end: bool, counts: dict[Ident, int] | None = None,
                  matched: dict[Ident, Any] | None = None) -> None:
        for path, st in new:
            # (without a stat: the open checks the identity, and skips one followed already)
            if st is not None and (st.st_dev, st.st_ino) in self.table.by_id:
                continue
            f = self.opener.open_new(path, now, at_end=at_end)
            if f is not None:
                f.names = counts.get(f.ident, 1) if counts is not None else 1
                if matched is not None and f.ident not in matched:
                    f.names = 1  # opened under an identity the directory entry did not give (overlayfs)
                self.table.index_path(f, path, index)
                self.scanner.opened(path, f.ident)
                self.births = self.first_scan_done  # a new identity at a watched name: a rotation happened


class _Holds:
    """``path in holds``: does the path match now (a full scan keeps no set of every path)."""

    def __init__(self, scanner: Scanner) -> None:
        self._scanner = scanner

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self._scanner.holds(path)

