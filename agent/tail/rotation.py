"""How a stream ends or moves: rotated away (drain it through its descriptor, then finish), found again under
another name or as a copy, truncated in place (finish the old content from its copy, restart at 0), or lost.

Every end hands out what is left (a last unterminated line, a container record split by its runtime and
joined so far, a pending multiline record) with ``finished``, so the agent forgets the stream's checkpoint in
the same transaction as its last lines.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import structlog

from agent.fileid import pread_exact
from agent.tail.compressed import decompressed_head, find_compressed, unpack_whole
from agent.tail.config import TailConfig
from agent.tail.emit import Emitter
from agent.tail.globs import expand_glob
from agent.tail.identity import OPEN_FLAGS, SearchFailed, find_in_dirs, later_generations, search_dirs
from agent.tail.opening import StreamOpener
from agent.tail.reader import LineReader
from agent.tail.siblings import Siblings
from agent.tail.stats import TailStats
from agent.tail.stream import Stream, current_path
from agent.tail.table import Ident, StreamTable

log = structlog.get_logger(__name__)


class Rotation:
    def __init__(self, config: TailConfig, table: StreamTable, opener: StreamOpener, reader: LineReader,
                 emitter: Emitter, stats: TailStats, known: Callable[[], set[Ident]], siblings: Siblings) -> None:
        self.config = config
        self.siblings = siblings
        self.known = known
        """Identities of restored checkpoints not followed yet (never to be read from 0)."""
        self.table = table
        self.opener = opener
        self.reader = reader
        self.emitter = emitter
        self.stats = stats

    def start_draining(self, f: Stream, reason: str) -> None:
        """The stream's name no longer leads to it: read on through the descriptor until it is quiet."""
        if f.draining:
            return
        if f.fd is not None:
            # The rotated name (app.log.1) for status and for the checkpoint's search directory.
            f.path = current_path(f.fd) or f.path
        f.draining = True
        self.table.attention[f] = None
        f.drain_reason = reason
        f.idle_since = None
        self.stats.rotations += 1
        log.info("tail.draining", source=self.config.name, path=f.path, reason=reason, offset=f.consumed)

    def relocate(self, f: Stream, now: float) -> bool:
        """A stream whose descriptor is closed lost its path: find it renamed, or its copy, or give it up.
        False when the search could not be made (out of descriptors): the stream stays, as it was."""
        followed = self.table.by_id
        try:
            extra = self._rotated_paths()
            found = find_in_dirs(f, same_inode=True, followed=followed, extra=extra)
            how = "renamed"
            if found is None:
                found = find_in_dirs(f, same_inode=False, followed=followed, extra=extra)
                how = "copy"
            if found is None:
                unpacked = find_compressed(f, search_dirs(f), extra, self.config.fingerprint_bytes)
                if unpacked is not None:
                    path, fd, size = unpacked
                    found, how = (path, fd, os.fstat(fd)), "compressed"
                    self.stats.compressed_reads += 1
                    log.info("tail.reading_compressed_rotation", source=self.config.name, path=path,
                             offset=f.consumed, unread_bytes=size)
        except SearchFailed as exc:
            if f.last_error != str(exc):
                log.warning("tail.search_postponed", source=self.config.name, path=f.path, error=str(exc))
            f.last_error = str(exc)
            return False
        if found is None:
            self.lose(f, "rotated file not found (deleted, or rotated where rotated_paths does not look?)")
            return True
        path, fd, st = found
        original = Stream(path=f.path, dev=f.dev, ino=f.ino, real=f.real)
        self.table.unindex(f)
        self.opener.attach(f, fd, st, path, now)
        log.info("tail.rotated_file_found", source=self.config.name, path=path, how=how, offset=f.consumed)
        f.last_error = None
        self.start_draining(f, f"found {how} after rotation")
        if how == "copy" and self._truncated_in_place(original):
            # copytruncate while the stream was not looked at: later rotations may hold unread generations
            self.follow_later_generations(original, path, st.st_mtime_ns, f.head, now)
            self.table.close_fd(original)
        return True

    def _truncated_in_place(self, original: Stream) -> bool:
        """Is the stream's own file still at its name (its content now another generation)? Opens it."""
        try:
            fd = os.open(original.path, OPEN_FLAGS)
        except OSError:
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != original.ident:
            os.close(fd)
            return False
        self.table.opened(original, fd)
        return True

    def _rotated_paths(self) -> list[str]:
        """What the source's ``rotated_paths`` globs match now (logrotate ``olddir``)."""
        found: list[str] = []
        for pattern in self.config.rotated_paths:
            found += expand_glob(os.path.abspath(os.path.expanduser(pattern)))
        return found

    def lose(self, f: Stream, reason: str) -> None:
        lost = max(0, f.size - f.consumed)
        self.stats.lost(f.path, lost)
        log.warning("tail.stream_lost", source=self.config.name, path=f.path, key=f.key, offset=f.consumed,
                    known_unread_bytes=lost, reason=reason)
        self.finish(f, self.reader.rest(f, time.monotonic()))

    def finish(self, f: Stream, read: Sequence[str]) -> None:
        """The stream is done for good: emit what is left (a last unterminated line too) and forget it."""
        lines = list(read)
        start = f.consumed
        now = time.monotonic()
        text = self.reader.last_line(f)
        if text is not None:
            lines.extend(self.reader.records(f, [text], [start], now))
        lines.extend(self.reader.rest(f, now))
        self.emitter.emit(f, lines, None, finished=True)
        self.siblings.record(f)  # read whole: never to be taken for an unread generation when renamed on
        self.table.close_fd(f)
        self.table.remove(f)
        log.info("tail.file_finished", source=self.config.name, path=f.path, offset=f.consumed)

    def restart_truncated(self, f: Stream, now: float) -> None:
        """The file was truncated or rewritten in place: end the old content's stream (finishing it from a
        rotated copy when one exists, copytruncate) and read the file again from 0 as a new stream."""
        self.stats.truncations += 1
        copy = None
        copy_mtime_ns = 0
        if f.key is not None or f.record or f.partial is not None or f.consumed < f.size:
            copy = find_in_dirs(f, same_inode=False, followed=self.table.by_id)
            if copy is not None:
                copy_mtime_ns = copy[2].st_mtime_ns
            else:  # copytruncate + compress (no delaycompress): the copy may already be an archive
                unpacked = find_compressed(f, search_dirs(f), self._rotated_paths(), self.config.fingerprint_bytes)
                if unpacked is not None:
                    copy = (unpacked[0], unpacked[1], os.fstat(unpacked[1]))
                    copy_mtime_ns = os.stat(unpacked[0]).st_mtime_ns
                    self.stats.compressed_reads += 1
        if (copy is not None and not f.consumed and not f.record and f.partial is None
                and self._read_whole_already(f, copy[1])):
            # The reader had read nothing of this content, and a look for generations rotated unread already
            # read its copy whole (the file was truncated again before the reader got to it): not twice.
            os.close(copy[1])
            copy = None
        log.warning("tail.truncated", source=self.config.name, path=f.path, offset=f.consumed,
                    copy=copy[0] if copy else None)
        if copy is not None:
            path, fd, st = copy
            old = self._old_content(f, path, st.st_dev, st.st_ino)
            self.opener.attach(old, fd, st, path, now)
            self.start_draining(old, "copy of a truncated file")
            # Copies newer than the last one drained, other than this one, hold generations never read: the
            # reader was held back across more than one rotation (it may not even have seen the file refill).
            since = min(f.copied_until_ns, copy_mtime_ns) if f.copied_until_ns else copy_mtime_ns
            self.follow_later_generations(f, path, since, old.head, now)
            f.copied_until_ns = max(copy_mtime_ns, f.copied_until_ns)
            f.copies_checked = False
        elif f.key is not None or f.record or f.partial is not None:
            self.stats.lost(f.path, max(0, f.size - f.consumed))
            old = self._old_content(f, f.path, f.dev, f.ino)
            self.emitter.emit(old, self.reader.rest(old, now), None, finished=True)
        if copy is None and f.copied_until_ns:
            # truncated again before the reader saw any of this generation: its copy, if any, is one of the
            # copies newer than the last one drained, looked for once content shows up (core: copies_checked)
            f.copies_checked = False
        f.key = None
        f.head = pread_exact(f.fd, self.config.fingerprint_bytes, 0) if f.fd is not None else b""
        f.guard = b""
        f.consumed = f.read_end = 0
        f.skipping_long_line = False
        f.record = []
        f.partial = f.partial_skip = None
        f.checkpoint_pos = 0
        f.checkpoint_skipping = False
        f.size = 0

    def follow_later_generations(self, live: Stream, copy_path: str, copy_mtime_ns: int, old_head: bytes | None,
                                 now: float) -> None:
        """Read the generations of the copytruncated file ``live`` rotated while the reader was behind (see
        :func:`agent.tail.identity.later_generations`), each whole, oldest first."""
        skip = set(self.table.by_id) | self.known()
        live_head = pread_exact(live.fd, self.config.fingerprint_bytes, 0) if live.fd is not None else b""
        if old_head:
            live.read_heads = (*live.read_heads[-15:], old_head)  # the generation just finished was read
        heads = [h for h in (*live.read_heads, live_head) if h]
        try:
            generations = later_generations(live, copy_path, copy_mtime_ns, skip=skip, heads=heads)
        except SearchFailed as exc:  # out of descriptors: the copies are looked for no further
            log.warning("tail.later_generations_not_searched", source=self.config.name, path=live.path,
                        error=str(exc))
            return
        for path, fd, compressed in generations:
            # A copy and its archive can both be there (logrotate compressing the copy right now): the same
            # generation twice. Each generation followed here joins ``heads``, so the other is skipped.
            if compressed:
                os.close(fd)
                head = decompressed_head(path, self.config.fingerprint_bytes)
                if not head or any(head[: len(h)] == h for h in heads):
                    continue  # not readable, or an archive of content the reader knows
                unpacked = unpack_whole(path)
                if unpacked is None:
                    continue
                fd = unpacked
                self.stats.compressed_reads += 1
            else:
                head = pread_exact(fd, self.config.fingerprint_bytes, 0)
                if head and any(head[: len(h)] == h for h in heads):
                    os.close(fd)
                    continue
            stream = self.opener.follow_from_start(path, fd, now, skip, "a generation rotated unread")
            if stream is not None:
                heads.append(head)
                # read now: at the next truncation its copy or archive (renamed on: app.log.1.gz -> .2.gz) is
                # content the reader knows, though no followed stream has that identity
                live.read_heads = (*live.read_heads[-15:], head)
                self.start_draining(stream, "generation rotated while the reader was behind")

    def _read_whole_already(self, f: Stream, fd: int) -> bool:
        """Does the file on ``fd`` start like a generation of ``f`` that was read whole (``read_heads``)?"""
        head = pread_exact(fd, self.config.fingerprint_bytes, 0)
        return bool(head) and any(h and head[: len(h)] == h for h in f.read_heads)

    @staticmethod
    def _old_content(f: Stream, path: str, dev: int, ino: int) -> Stream:
        """A stream for the content ``f`` was reading (its key and positions), now found at ``path``."""
        return Stream(path=path, dev=dev, ino=ino, key=f.key, head=f.head, guard=f.guard, guard_fp=f.guard_fp,
                      guard_len=f.guard_len, consumed=f.consumed, read_end=f.consumed,
                      skipping_long_line=f.skipping_long_line, checkpoint_pos=f.checkpoint_pos,
                      checkpoint_skipping=f.checkpoint_skipping, record=f.record, record_start=f.record_start,
                      record_updated=f.record_updated, partial=f.partial, partial_skip=f.partial_skip)
