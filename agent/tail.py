"""File source: find files by glob, read appended lines, survive rotation and truncation, emit checkpoints.

Contract (``docs/architecture.md`` "Source contract", and ``docs/tailing.md``): every :class:`Batch` carries
the position right after its lines; the downstream commits that checkpoint together with the events derived
from it and, on restart, hands the last committed checkpoint of every stream back to a new :class:`Tailer`.
So this module never persists anything itself, never advances a checkpoint past a partial last line, and
emits the batches of one stream strictly in order.

Design in one paragraph: a *stream* is the content of one file identity (device + inode + fingerprint of the
first bytes) read through an open descriptor, so a file renamed away by rotation is finished through the
descriptor, never by path. Discovery (glob) and reading run on one dedicated worker thread, one *cycle* at a
time; the event loop only hands batches to the bounded queue (backpressure) and sleeps until inotify (via
watchdog, on the glob directories only) hints at a change or a slow safety-net timer fires. If inotify is
unavailable or overflows, a periodic stat() reconciliation delivers the same data, only later.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import glob
import json
import logging
import os
import re
import stat as statmod
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.fileid import fingerprint, glob_to_regex, has_magic, nearest_existing_dir, pread_exact, watch_base
from agent.lines import LineChunk
from agent.units import ByteSize, Duration

log = structlog.get_logger(__name__)

_STATE_VERSION = 1
_TAIL_BYTES = 128
"""Bytes right before a checkpoint's offset, fingerprinted in the state: a file rewritten with the same first
bytes (a fixed header) and grown past the old offset is still recognised as rewritten."""
_COPY_CANDIDATES = 64
"""At most this many files of a directory are opened when looking for a rotated copy (cost bound)."""
_DEEP_EVERY = 6
"""While inotify works, every 6th rescan stat()s every file (the others only list directories)."""
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


# --------------------------------------------------------------------------------------------------- config


class MultilineConfig(BaseModel):
    """Join continuation lines (e.g. Java stack traces) to the line that starts a record."""

    model_config = ConfigDict(extra="forbid")

    start: str
    """Regex (Python ``re``, searched) that marks the first line of a record; anchor it with ``^``."""
    timeout: Duration = 2.0
    """A pending record is emitted when no line was added to it for this long."""
    max_lines: int = Field(500, ge=1)
    """A record is emitted as soon as it has this many lines (bounds memory)."""

    @field_validator("start")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value


class TailConfig(BaseModel):
    """One file source. The app's config subclasses it to add ``rules``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1)
    exclude_paths: list[str] = []
    start_at: Literal["end", "beginning"] = "end"
    encoding: str = "utf-8"
    max_line_bytes: ByteSize = Field(64 * 1024, ge=256)
    multiline: MultilineConfig | None = None
    max_open_files: int = Field(1024, ge=1)
    read_chunk_bytes: ByteSize = Field(1024 * 1024, ge=4096)
    fingerprint_bytes: int = Field(256, ge=16, le=65536)
    poll_interval: Duration = Field(1.0, gt=0)
    rescan_interval: Duration = Field(10.0, gt=0)
    rotate_wait: Duration = 5.0
    inotify: bool = True

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{value!r} is not a text encoding")
        try:
            ok = "\n".encode(info.name) == b"\n" and b"a\nb".decode(info.name) == "a\nb"
        except (UnicodeError, LookupError):
            ok = False
        if not ok:
            raise ValueError(f"encoding {value!r} is not ASCII-compatible (newline must be the byte 0x0A)")
        return info.name

    @field_validator("paths", "exclude_paths")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError("empty path pattern")
        return value


# ------------------------------------------------------------------------------------------- data contract


@dataclass(frozen=True, slots=True)
class Checkpoint:
    key: str
    state: str


@dataclass(slots=True)
class Batch:
    source: str
    path: str
    lines: Sequence[str]  # a LineChunk on the fast path (agent/lines.py)
    checkpoint: Checkpoint | None
    finished: bool = False
    data: bytes | None = None
    fields: list[dict[str, str]] | None = None


@dataclass(slots=True)
class TailStats:
    """Counters the app exports to Prometheus (monotonic, per Tailer)."""

    lines_read: int = 0
    bytes_read: int = 0
    batches: int = 0
    lines_truncated: int = 0
    bytes_skipped: int = 0
    """Bytes dropped from over-long lines (beyond ``max_line_bytes``)."""
    bytes_replaced: int = 0
    """Invalid bytes for the configured encoding, replaced by U+FFFD."""
    bytes_lost: int = 0
    """Known unread bytes that could not be read (truncated without a copy, rotated file gone)."""
    files_opened: int = 0
    files_closed: int = 0
    rotations: int = 0
    truncations: int = 0
    errors: int = 0
    inotify_overflows: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# ----------------------------------------------------------------------------------------- decoding helpers

_tls = threading.local()


def _count_replace(exc: UnicodeError) -> tuple[str, int]:
    """Like ``errors="replace"`` but counts the replaced bytes (the drop must be visible in metrics)."""
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _tls.replaced = getattr(_tls, "replaced", 0) + (exc.end - exc.start)
    return "\ufffd", exc.end


codecs.register_error("dutytail.count", _count_replace)


def _real(path: str) -> str:
    """realpath, sharing the path's string object when they are equal (the usual case)."""
    real = os.path.realpath(path)
    return path if real == path else real


# ---------------------------------------------------------------------------------------------- the stream


@dataclass(eq=False, slots=True)
class _File:
    """One stream: the content of one file identity, read in order. Mutated only on the worker thread."""

    path: str
    dev: int
    ino: int
    real: str = ""
    key: str | None = None
    fd: int | None = None
    head: bytes | None = None
    """First ``fingerprint_bytes`` bytes as last seen (grows with a short file); None until verified."""
    fp: str = ""
    fp_len: int = 0
    """Fingerprint of a restored checkpoint, checked before the stream is trusted."""
    tail: bytes = b""
    """The bytes right before ``offset`` (up to ``_TAIL_BYTES``)."""
    tail_fp: str = ""
    tail_len: int = 0
    """Fingerprint of those bytes from a restored checkpoint (the bytes themselves are not stored)."""
    offset: int = 0
    """Position after the last complete line consumed (what a checkpoint may say, ignoring multiline)."""
    read_pos: int = 0
    skipping: bool = False
    size: int = 0
    mtime_ns: int = 0
    verified: bool = True
    start_at_end: bool = False
    draining: bool = False
    drain_reason: str = ""
    idle_since: float | None = None
    pending: list[str] = field(default_factory=list)
    pending_start: int = 0
    pending_last: float = 0.0
    ckpt_off: int = 0
    ckpt_skip: bool = False
    delivered_off: int = 0
    last_activity: float = 0.0
    last_error: str | None = None
    warned_long: bool = False
    warned_encoding: bool = False

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)


class _Stat:
    """What a deep scan keeps per file (a full ``os.stat_result`` is ~645 B, with 2,000 files per scan)."""

    __slots__ = ("st_dev", "st_ino", "st_mtime_ns", "st_size")

    def __init__(self, st: os.stat_result) -> None:
        self.st_dev, self.st_ino, self.st_size, self.st_mtime_ns = st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(slots=True)
class _CycleResult:
    batches: list[tuple[_File, Batch, int]]
    busy: bool
    deadline: float


class _EventHandler:
    """watchdog handler: turns filesystem events into cheap hints for the loop (runs on watchdog's thread)."""

    def __init__(self, tailer: Tailer) -> None:
        self._tailer = tailer

    def dispatch(self, event: Any) -> None:
        self._tailer._on_fs_event(event)


class _OverflowLogHandler(logging.Handler):
    """watchdog 7 only *logs* an inotify queue overflow; this turns that log line into a full rescan."""

    def __init__(self, tailer: Tailer) -> None:
        super().__init__(logging.WARNING)
        self._tailer = tailer

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._tailer._on_overflow()


# ---------------------------------------------------------------------------------------------- the tailer


class Tailer:
    """Tail the files of one :class:`TailConfig`; see the module docstring and ``docs/tailing.md``.

    ``force_polling`` (or ``config.inotify = False``) skips inotify entirely, as if it were unavailable.
    A Tailer is single-use: after :meth:`run` returns or is cancelled, call :meth:`close` and build a new one
    from the committed checkpoints.
    """

    def __init__(
        self,
        config: TailConfig,
        checkpoints: dict[str, Checkpoint],
        *,
        is_first_start: bool,
        stats: TailStats | None = None,
        force_polling: bool = False,
    ) -> None:
        self.config = config
        self.stats = stats if stats is not None else TailStats()
        self._first_start = is_first_start
        self._patterns = [os.path.abspath(os.path.expanduser(p)) for p in config.paths]
        self._include_rx = [glob_to_regex(p) for p in self._patterns]
        self._exclude_rx: list[tuple[bool, re.Pattern[str]]] = []
        for pattern in config.exclude_paths:
            if "/" in pattern:
                self._exclude_rx.append((False, glob_to_regex(os.path.abspath(pattern))))
            else:
                self._exclude_rx.append((True, glob_to_regex(pattern)))
        self._encoding = config.encoding
        self._utf8 = codecs.lookup(config.encoding).name == "utf-8"
        self._ml_rx = re.compile(config.multiline.start) if config.multiline else None
        self._polling_only = force_polling or not config.inotify

        self._files: dict[_File, None] = {}
        self._by_id: dict[tuple[int, int], _File] = {}
        self._path_index: dict[str, _File] = {}
        self._unresolved: list[_File] = []
        self._forget: list[Checkpoint] = []
        self._keys: set[str] = set(checkpoints)
        self._ready: dict[_File, None] = {}
        self._attention: dict[_File, None] = {}
        self._waiting: dict[str, bool] = {}
        self._errors: dict[str, str] = {}
        self._open_count = 0
        self._next_rescan = 0.0
        self._last_scan = 0.0
        self._scans = 0
        self._deep_requested = False
        # watchdog adds an inotify watch in its emitter thread, after schedule() returns: an append in that
        # gap produces no event. Until this time, deep rescans run every 0.25 s (see _sync_watches).
        self._watch_settle_until = 0.0
        self._name_rx: dict[str, re.Pattern[str]] = {}
        self._dir_cache: dict[str, tuple[tuple[int, int], list[tuple[str, tuple[int, int]]], list[str]]] = {}
        self._initial_done = False

        for key, ckpt in checkpoints.items():
            restored = self._restore(key, ckpt)
            if restored is None:
                self._forget.append(ckpt)
            else:
                self._unresolved.append(restored)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ev_lock = threading.Lock()
        self._dirty: set[str] = set()
        self._rescan_requested = False
        self._wake_scheduled = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None
        self._observer: Any = None
        self._watches: dict[tuple[str, bool], Any] = {}
        self._watch_mode = "polling" if self._polling_only else "starting"
        self._watch_error: str | None = "disabled by configuration" if self._polling_only else None
        self._overflow_handler: _OverflowLogHandler | None = None
        self._started = False
        self._stopping = False
        self._released = False
        self._flushed = False

    # ------------------------------------------------------------------------------------------ public API

    @property
    def initial_done(self) -> bool:
        """The first scan has opened every matching file (with ``start_at: end``, fixed where reading starts):
        until then a line written now might be taken for history and skipped, so the agent is not ready."""
        return self._initial_done

    async def run(self, queue: asyncio.Queue[Batch]) -> None:
        """Put batches on ``queue`` until cancelled; ``put`` on a bounded queue gives backpressure."""
        if self._started:
            raise RuntimeError("a Tailer runs once; build a new one from the committed checkpoints")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"tail-{self.config.name}"
        )
        try:
            if not self._polling_only:
                await self._call(self._start_observer)
            while True:
                self._wake.clear()
                with self._ev_lock:
                    dirty, self._dirty = self._dirty, set()
                    rescan, self._rescan_requested = self._rescan_requested, False
                result: _CycleResult = await self._call(self._cycle, dirty, rescan)
                for f, batch, off in result.batches:
                    await queue.put(batch)
                    f.delivered_off = off
                if result.busy:
                    await asyncio.sleep(0)
                    continue
                delay = result.deadline - time.monotonic()
                if delay > 0 and not self._wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
        finally:
            self._stopping = True
            inflight = self._inflight
            if inflight is not None and not inflight.done():
                inflight.add_done_callback(lambda _f: self._release())
            else:
                self._release()

    async def close(self, queue: asyncio.Queue[Batch] | None = None) -> None:
        """Finish after :meth:`run` was cancelled: flush pending multiline records, free resources.

        A pending record is flushed only when every batch before it reached the queue (otherwise a restart
        re-reads it from the last committed checkpoint anyway, and flushing would skip the lost lines).
        Partial last lines are never flushed: their checkpoint stays before them.
        """
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            await asyncio.wrap_future(inflight)
        if queue is not None and not self._flushed:
            self._flushed = True
            for f in list(self._files):
                if not f.pending:
                    continue
                if f.delivered_off != f.ckpt_off or f.ckpt_off != f.pending_start:
                    continue
                record = "\n".join(f.pending)
                f.pending = []
                batch = Batch(
                    source=self.config.name,
                    path=f.path,
                    lines=[record],
                    checkpoint=Checkpoint(self._ensure_key(f), self._state(f, f.offset, f.skipping, f.tail)),
                )
                self.stats.batches += 1
                await queue.put(batch)
                f.delivered_off = f.ckpt_off = f.offset
        self._stopping = True
        self._release()

    def status(self) -> dict[str, Any]:
        """Health view: per-file position and lag, descriptor use, watch mode, errors and counters."""
        files = []
        for f in list(self._files):
            files.append(
                {
                    "path": f.path,
                    "key": f.key,
                    "offset": f.offset,
                    "size": f.size,
                    "lag_bytes": max(0, f.size - f.offset),
                    "open": f.fd is not None,
                    "state": "draining" if f.draining else ("open" if f.fd is not None else "closed"),
                    "drain_reason": f.drain_reason or None,
                    "last_error": f.last_error,
                }
            )
        for path, error in sorted(dict(self._errors).items()):
            # Files (or directories) we cannot read at all, e.g. permission denied or a dangling symlink.
            files.append(
                {
                    "path": path,
                    "key": None,
                    "offset": 0,
                    "size": 0,
                    "lag_bytes": 0,
                    "open": False,
                    "state": "error",
                    "drain_reason": None,
                    "last_error": error,
                }
            )
        return {
            "source": self.config.name,
            "watch_mode": self._watch_mode,
            "watch_error": self._watch_error,
            "watched_dirs": sorted(d for d, _r in self._watches),
            "open_files": self._open_count,
            "max_open_files": self.config.max_open_files,
            "waiting_for_descriptor": len(self._waiting),
            "unresolved_checkpoints": len(self._unresolved),
            "files": files,
            "errors": [{"path": p, "error": e} for p, e in sorted(dict(self._errors).items())],
            "stats": self.stats.as_dict(),
        }

    # ---------------------------------------------------------------------------------- loop-side plumbing

    async def _call(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None
        fut = self._executor.submit(fn, *args)
        self._inflight = fut
        return await asyncio.wrap_future(fut)

    def _notify(self, dirty: str | None = None, rescan: bool = False) -> None:
        """Record a hint and wake the loop; called from watchdog's thread, coalesces wake-ups."""
        with self._ev_lock:
            if dirty is not None:
                self._dirty.add(dirty)
            if rescan:
                self._rescan_requested = True
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._set_wake)
        except RuntimeError:  # loop closed during shutdown
            pass

    def _set_wake(self) -> None:
        with self._ev_lock:
            self._wake_scheduled = False
        if self._wake is not None:
            self._wake.set()

    def _on_fs_event(self, event: Any) -> None:
        kind = event.event_type
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            if kind in ("created", "deleted", "moved"):
                self._notify(rescan=True)
            return
        if kind in ("modified", "closed"):
            if src in self._path_index:
                self._notify(dirty=src)
            elif self._included(src):
                self._notify(rescan=True)  # e.g. chmod of a file we could not open: retry now
            return
        paths = [src]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
        if any(p in self._path_index or self._included(p) for p in paths):
            self._notify(rescan=True)

    def _on_overflow(self) -> None:
        self.stats.inotify_overflows += 1
        self._deep_requested = True
        self._watch_error = "inotify queue overflowed (events lost; rescanned)"
        self._notify(rescan=True)

    def _included(self, path: str) -> bool:
        return any(rx.match(path) for rx in self._include_rx) and not self._excluded(path)

    def _excluded(self, path: str) -> bool:
        if not self._exclude_rx:
            return False
        for by_name, rx in self._exclude_rx:
            if rx.match(os.path.basename(path) if by_name else path):
                return True
        return False

    # --------------------------------------------------------------------------------- inotify (worker side)

    def _start_observer(self) -> None:
        try:
            from watchdog.observers.inotify import InotifyObserver

            observer = InotifyObserver()
            observer.start()
        except Exception as exc:  # no inotify, EMFILE on inotify_init, non-Linux...
            self._fallback(f"inotify unavailable: {exc}")
            return
        self._observer = observer
        self._overflow_handler = _OverflowLogHandler(self)
        logging.getLogger("watchdog.observers.inotify_c").addHandler(self._overflow_handler)
        self._watch_mode = "inotify"
        self._sync_watches()

    def _fallback(self, reason: str) -> None:
        if self._watch_mode != "polling":
            log.warning("tail.inotify_fallback", source=self.config.name, reason=reason)
        self._watch_mode = "polling"
        self._watch_error = reason

    def _sync_watches(self) -> None:
        """Watch the glob base directories (and the directories of symlink targets), never single files."""
        if self._observer is None or self._watch_mode != "inotify":
            return
        wanted: set[tuple[str, bool]] = set()
        for pattern in self._patterns:
            base, recursive = watch_base(pattern)
            if os.path.isdir(base):
                wanted.add((base, recursive))
            else:
                wanted.add((nearest_existing_dir(base), False))
        covered = {d for d, _ in wanted}
        for f in list(self._files):
            d = os.path.dirname(f.real or f.path)
            if d not in covered and os.path.isdir(d):
                wanted.add((d, False))
                covered.add(d)
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        event_filter = [
            FileCreatedEvent,
            FileDeletedEvent,
            FileMovedEvent,
            FileModifiedEvent,
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
        ]
        # A watched directory that was deleted ends its watchdog emitter: schedule it again if it came back.
        alive = {e.watch for e in self._observer.emitters if e.is_alive()}
        for spec, watch in list(self._watches.items()):
            if watch not in alive:
                del self._watches[spec]
                with contextlib.suppress(Exception):
                    self._observer.unschedule(watch)
        for spec in list(self._watches):
            if spec not in wanted:
                with contextlib.suppress(Exception):
                    self._observer.unschedule(self._watches.pop(spec))
        added = False
        for spec in wanted - set(self._watches):
            try:
                self._watches[spec] = self._observer.schedule(
                    _EventHandler(self), spec[0], recursive=spec[1], event_filter=event_filter
                )
                added = True
            except Exception as exc:  # ENOSPC: watch limit; EACCES; vanished directory
                self._fallback(f"cannot watch {spec[0]}: {exc}")
                return
        if added:
            self._watch_settle_until = time.monotonic() + 2.0
        if added and self._initial_done:
            # Files created between the directory listing and the new watch produced no event.
            self._notify(rescan=True)

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if self._overflow_handler is not None:
            logging.getLogger("watchdog.observers.inotify_c").removeHandler(self._overflow_handler)
            self._overflow_handler = None
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(timeout=5)
        self._watches.clear()

    def _release(self) -> None:
        """Close every descriptor and stop the observer; idempotent, safe from any thread once work stopped"""
        with self._ev_lock:
            if self._released:
                return
            self._released = True
        self._stop_observer()
        for f in list(self._files):
            self._close_fd(f)
        for f in self._unresolved:
            self._close_fd(f)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    # --------------------------------------------------------------------------------- the cycle (worker)

    def _cycle(self, dirty: set[str], rescan: bool) -> _CycleResult:
        """One unit of blocking work; an unexpected error is logged and retried, never ends :meth:`run`."""
        try:
            return self._cycle_inner(dirty, rescan)
        except Exception:
            self.stats.errors += 1
            log.exception("tail.cycle_failed", source=self.config.name)
            with self._ev_lock:
                self._rescan_requested = True
            return _CycleResult([], False, time.monotonic() + self.config.poll_interval)

    def _cycle_inner(self, dirty: set[str], rescan: bool) -> _CycleResult:
        """Discovery if due, then one chunk per ready file, then housekeeping (timeouts, drained files)."""
        out: list[tuple[_File, Batch, int]] = []
        now = time.monotonic()
        if self._stopping:
            return _CycleResult(out, False, now + 3600)
        if rescan or not self._initial_done or now >= self._next_rescan:
            self._discover(out, now, event=rescan)
            self._last_scan = now
        # Full rescans: slow safety net while inotify works, poll_interval without it or while retrying.
        interval = self.config.poll_interval if self._watch_mode != "inotify" else self.config.rescan_interval
        if self._errors or self._waiting or self._unresolved:
            interval = min(interval, self.config.poll_interval)
        if now < self._watch_settle_until:
            interval = min(interval, 0.25)
            self._deep_requested = True
        self._next_rescan = self._last_scan + interval
        for path in dirty:
            f = self._path_index.get(path)
            if f is not None:
                self._ready[f] = None
        if self._waiting:
            self._open_waiting(out, now)

        todo = dict(self._ready)
        self._ready = {}
        # Files that need a look every cycle whatever the events say (few): draining, failing, a pending
        # multiline record, waiting for a descriptor. Kept as a set so a cycle never scans every file.
        for f in list(self._attention):
            if f not in self._files or not self._needs_attention(f):
                self._attention.pop(f, None)
            else:
                todo[f] = None
        budget = 4 * self.config.read_chunk_bytes
        for f in todo:
            if f not in self._files:
                continue
            if budget <= 0:
                self._ready[f] = None
                continue
            try:
                budget -= self._service(f, out, now)
            except Exception as exc:  # never let one bad file stop the others
                self._file_error(f, exc)
        deadline = self._next_rescan
        retry = bool(self._watch_mode != "inotify" or self._errors or self._waiting)
        for f in self._attention:
            if f.draining:
                deadline = min(deadline, now + min(self.config.poll_interval, max(self.config.rotate_wait, 0.05)))
            if f.pending and self.config.multiline:
                deadline = min(deadline, f.pending_last + self.config.multiline.timeout)
            if f.last_error is not None or f.fd is None:
                retry = True
        if retry:
            deadline = min(deadline, now + self.config.poll_interval)
        return _CycleResult(out, bool(self._ready), deadline)

    # ------------------------------------------------------------------------------------------ discovery

    def _glob(self, mode: str) -> dict[tuple[int, int], tuple[str, _Stat | None]]:
        """Files matching the globs, by identity. ``st`` is None for a file known unchanged in identity.

        Three costs, because stat() of thousands of idle files is what makes naive tailers expensive:

        * ``deep``: stat() every file (polling mode, initial scan, every 6th periodic rescan, overflow).
        * ``light`` (an inotify event asked for a rescan): list directories and take a file's identity
          from the directory entry (d_ino) when it equals the stream already followed at that path: one
          readdir per directory. Where d_ino differs from st_ino (some overlayfs setups) the hint never
          matches and files are stat()ed, which is only slower.
        * ``cached`` (periodic safety net while inotify works): a directory whose inode and mtime did not
          change since its last listing has the same entries; only its symlinks and failing entries are
          looked at again. One stat() per directory.
        """
        deep = mode == "deep"
        matched: dict[tuple[int, int], tuple[str, _Stat | None]] = {}
        errors: dict[str, str] = {}
        seen: set[str] = set()
        for pattern in self._patterns:
            base, _ = watch_base(pattern)
            if os.path.isdir(base) and not os.access(base, os.R_OK | os.X_OK):
                errors[base] = "permission denied (directory)"
            directory, name_pattern = os.path.split(pattern)
            listing: tuple[int, int] | None = None
            regular: list[tuple[str, tuple[int, int]]] = []
            recheck: list[str] = []
            if has_magic(directory) or "**" in name_pattern:
                candidates: Iterable[tuple[str, os.DirEntry[str] | None]] = (
                    (p, None) for p in sorted(glob.glob(pattern, recursive=True))
                )
            else:
                try:
                    dst = os.stat(directory)
                    listing = (dst.st_ino, dst.st_mtime_ns)
                except OSError:
                    listing = None
                cached = self._dir_cache.get(pattern)
                if mode == "cached" and listing is not None and cached is not None and cached[0] == listing:
                    for path, ident in cached[1]:
                        seen.add(path)
                        matched.setdefault(ident, (path, None))
                    regular = list(cached[1])
                    candidates = [(p, None) for p in cached[2]]
                else:
                    candidates = self._list_dir(directory, name_pattern)
                    listing = listing if has_magic(name_pattern) else None
            dir_dev = -1
            for path, entry in candidates:
                if self._excluded(path):
                    continue
                if entry is None or entry.is_symlink():
                    recheck.append(path)  # a symlink's target can change without its directory changing
                if entry is not None and not deep:
                    f = self._path_index.get(path)
                    if (
                        f is not None
                        and not entry.is_symlink()
                        and entry.inode() == f.ino
                        and self._by_id.get(f.ident) is f
                    ):
                        if dir_dev == -1:
                            dir_dev = os.stat(directory).st_dev
                        if dir_dev == f.dev:
                            seen.add(path)
                            matched.setdefault(f.ident, (path, None))
                            regular.append((path, f.ident))
                            continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    if os.path.islink(path):
                        errors[path] = f"dangling symlink -> {os.readlink(path)}"
                    continue
                except OSError as exc:
                    errors[path] = exc.strerror or str(exc)
                    recheck.append(path)
                    continue
                if not statmod.S_ISREG(st.st_mode):
                    continue
                seen.add(path)
                st = _Stat(st)  # 4 fields instead of a full stat_result (~645 B -> ~207 B per file per deep scan)
                matched.setdefault((st.st_dev, st.st_ino), (path, st))
                if entry is not None and not entry.is_symlink():
                    regular.append((path, (st.st_dev, st.st_ino)))
            if listing is not None:
                self._dir_cache[pattern] = (listing, regular, list(dict.fromkeys(recheck)))
            else:
                self._dir_cache.pop(pattern, None)
        for path, msg in errors.items():
            self._set_error(path, msg)
        for path in list(self._errors):
            if path in errors:
                continue
            if not self._errors[path].startswith("open:") or path not in seen:
                self._clear_error(path)
        return matched

    def _list_dir(self, directory: str, name_pattern: str) -> list[tuple[str, os.DirEntry[str] | None]]:
        """glob.glob for a pattern with wildcards in the last component only, keeping the dir entries."""
        if not has_magic(name_pattern):
            path = os.path.join(directory, name_pattern)
            return [(path, None)] if os.path.lexists(path) else []
        rx = self._name_rx.get(name_pattern)
        if rx is None:
            rx = self._name_rx[name_pattern] = glob_to_regex(name_pattern)
        hidden_ok = name_pattern.startswith(".")
        try:
            with os.scandir(directory) as it:
                entries = [
                    (f"{directory}/{e.name}", e)
                    for e in it
                    if (hidden_ok or not e.name.startswith(".")) and rx.match(e.name)
                ]
        except OSError:
            return []
        entries.sort(key=lambda pe: pe[0])
        return entries

    def _discover(self, out: list[tuple[_File, Batch, int]], now: float, *, event: bool = True) -> None:
        initial = not self._initial_done
        self._scans += 1
        if self._watch_mode != "inotify" or self._deep_requested or initial or self._scans % _DEEP_EVERY == 0:
            mode = "deep"
        else:
            mode = "light" if event else "cached"
        self._deep_requested = False
        matched = self._glob(mode)
        for ckpt in self._forget:
            log.warning("tail.checkpoint_unusable", source=self.config.name, key=ckpt.key)
            self._emit_forget(out, ckpt.key, ckpt.state)
        self._forget = []

        # 1. streams we already follow (and restored checkpoints) found again by identity.
        new: list[tuple[str, _Stat | None]] = []
        index: dict[str, _File] = {}
        for ident, (path, st) in matched.items():
            f = self._by_id.get(ident)
            if f is None and self._unresolved:
                f = self._adopt_restored(ident, path, out, now)
            if f is None:
                new.append((path, st))
                continue
            if f.path != path:
                f.path = path
                f.real = _real(path)
            if f.draining:
                f.draining, f.drain_reason, f.idle_since = False, "", None
            index[path] = f
            if f.real:
                index.setdefault(f.real, f)
            if st is not None and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
                self._ready[f] = None  # changed (a closed file is re-opened only then)

        # 2. streams no glob matches any more: rotated away, deleted, symlink retargeted.
        for f in list(self._files):
            if f.ident in matched or f.draining:
                continue
            if f.fd is None:
                self._relocate(f, out, now)
            else:
                self._start_draining(f, "rotated or deleted")
        # 3. restored checkpoints not found under any glob: rotated while we were stopped.
        if self._unresolved:
            still: list[_File] = []
            for f in self._unresolved:
                if f.path in self._errors:
                    still.append(f)  # e.g. permission denied: keep the checkpoint, retry later
                    continue
                self._relocate(f, out, now)
            self._unresolved = still
        # 4. new files.
        for path, st in new:
            if st is None:  # identity from a cached listing, but not followed yet (e.g. it failed to open)
                try:
                    st = _Stat(os.stat(path))
                except OSError:
                    continue
            if (st.st_dev, st.st_ino) in self._by_id:
                continue
            f = self._open_new(path, out, now, at_end=initial and self._first_start and self._start_end)
            if f is not None:
                index[path] = f
                if f.real:
                    index.setdefault(f.real, f)
        self._path_index = index
        self._initial_done = True
        if self._observer is not None:
            self._sync_watches()

    @property
    def _start_end(self) -> bool:
        return self.config.start_at == "end"

    def _adopt_restored(
        self, ident: tuple[int, int], path: str, out: list[tuple[_File, Batch, int]], now: float
    ) -> _File | None:
        candidates = [f for f in self._unresolved if f.ident == ident]
        if not candidates:
            return None
        fd = self._try_open(path)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != ident:
                os.close(fd)
                return None
            for f in candidates:
                if self._matches(fd, st, f):
                    self._unresolved.remove(f)
                    self._attach(f, fd, st, path, now)
                    return f
        except OSError:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def _attach(self, f: _File, fd: int, st: os.stat_result, path: str, now: float) -> None:
        """Make a restored (or relocated) stream live on ``fd`` after its content was verified."""
        f.fd = fd
        self._open_count += 1
        self.stats.files_opened += 1
        f.path = path
        f.real = _real(path)
        f.dev, f.ino = st.st_dev, st.st_ino
        f.head = pread_exact(fd, self.config.fingerprint_bytes, 0)
        if not f.tail:
            k = min(_TAIL_BYTES, f.offset)
            f.tail = pread_exact(fd, k, f.offset - k)
        f.verified = True
        f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        f.last_activity = now
        self._files[f] = None
        self._by_id[f.ident] = f
        self._ready[f] = None
        if self._open_count > self.config.max_open_files and not self._evict_one(exclude=f):
            self._close_fd(f)  # verified; re-opened by path when a descriptor frees up

    def _open_new(self, path: str, out: list[tuple[_File, Batch, int]], now: float, *, at_end: bool) -> _File | None:
        if not self._make_room():
            self._waiting[path] = at_end
            return None
        self._waiting.pop(path, None)
        fd = self._try_open(path)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            if not statmod.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in self._by_id:
                os.close(fd)
                return None
            f = _File(path=path, dev=st.st_dev, ino=st.st_ino, real=_real(path), fd=fd)
            self._open_count += 1
            self.stats.files_opened += 1
            f.head = pread_exact(fd, self.config.fingerprint_bytes, 0)
            f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
            f.last_activity = now
            if at_end and st.st_size > 0:
                off, skip = self._end_position(fd, st.st_size)
                f.offset = f.read_pos = off
                f.skipping = skip
                f.tail = self._tail_bytes(f, off)
                self._emit(out, f, [], None)
            self._files[f] = None
            self._by_id[f.ident] = f
            if f.read_pos < st.st_size or f.skipping:
                self._ready[f] = None
            log.info("tail.file_opened", source=self.config.name, path=path, offset=f.offset)
            return f
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.close(fd)
            self._set_error(path, f"open: {exc.strerror or exc}")
            return None

    def _open_waiting(self, out: list[tuple[_File, Batch, int]], now: float) -> None:
        for path, at_end in list(self._waiting.items()):
            if not self._make_room():
                return
            self._waiting.pop(path, None)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in self._by_id:
                continue
            f = self._open_new(path, out, now, at_end=at_end)
            if f is not None:
                self._path_index[path] = f
                if f.real:
                    self._path_index.setdefault(f.real, f)

    def _end_position(self, fd: int, size: int) -> tuple[int, bool]:
        """Where ``start_at: end`` starts: after the last newline, so a half-written last line is not cut."""
        window = min(size, self.config.max_line_bytes + 1)
        chunk = pread_exact(fd, window, size - window)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return size - window + nl + 1, False
        if window < size:  # the last line is already over-long: skip the rest of it
            return size, True
        return 0, False

    def _try_open(self, path: str) -> int | None:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._set_error(path, f"open: {exc.strerror or exc}")
            return None
        if path in self._errors:
            self._clear_error(path)
        return fd

    def _make_room(self) -> bool:
        """Keep open descriptors under ``max_open_files`` by closing the least recently active idle file."""
        if self._open_count < self.config.max_open_files:
            return True
        return self._evict_one()

    def _evict_one(self, exclude: _File | None = None) -> bool:
        """Close fully read, not draining files (re-opened by path on their next change), LRU first.

        Closes an eighth of the budget at once so opening thousands of files costs O(n) per batch of
        evictions rather than a scan per opened file.
        """
        idle = [
            f
            for f in self._files
            if f.fd is not None
            and f is not exclude
            and not f.draining
            and f.read_pos >= f.size
            and f not in self._ready
        ]
        if not idle:
            return False
        idle.sort(key=lambda f: f.last_activity)
        for f in idle[: max(1, self.config.max_open_files // 8)]:
            self._close_fd(f)
        return True

    def _close_fd(self, f: _File) -> None:
        if f.fd is not None:
            with contextlib.suppress(OSError):
                os.close(f.fd)
            f.fd = None
            self._open_count -= 1
            self.stats.files_closed += 1

    # --------------------------------------------------------------------------------- identity & recovery

    def _matches(self, fd: int, st: os.stat_result, f: _File) -> bool:
        """Does the open file hold the content ``f`` was reading (first bytes and bytes before the offset)?"""
        if st.st_size < f.offset:
            return False
        if f.head is not None:
            if f.head and pread_exact(fd, len(f.head), 0) != f.head:
                return False
        elif f.fp_len:
            head = pread_exact(fd, f.fp_len, 0)
            if len(head) != f.fp_len or fingerprint(head) != f.fp:
                return False
        if f.tail:
            if pread_exact(fd, len(f.tail), f.offset - len(f.tail)) != f.tail:
                return False
        elif f.tail_len:
            if fingerprint(pread_exact(fd, f.tail_len, f.offset - f.tail_len)) != f.tail_fp:
                return False
        return True

    def _search_dirs(self, f: _File) -> list[str]:
        if not f.real:
            f.real = os.path.realpath(f.path)  # restored streams resolve lazily, on the worker thread
        dirs = [os.path.dirname(f.path)]
        if f.real and os.path.dirname(f.real) not in dirs:
            dirs.append(os.path.dirname(f.real))
        return dirs

    def _find_in_dirs(self, f: _File, *, same_inode: bool) -> tuple[str, int, os.stat_result] | None:
        """Find the file holding ``f``'s content in its directory: by inode (renamed) or by content (a copy).

        Rotated names (``app.log.1``, ``app.log-20261127``) usually no longer match the glob, so the search
        is by directory listing, preferring names that start with the original name, newest first.
        """
        if not same_inode and not (f.head or f.fp_len):
            return None
        base = os.path.basename(f.path)
        candidates: list[tuple[int, float, str, os.stat_result]] = []
        for d in self._search_dirs(f):
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for entry in entries:
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if same_inode:
                    if ident != f.ident:
                        continue
                elif ident == f.ident or ident in self._by_id or st.st_size < f.offset:
                    continue
                rank = 0 if entry.name.startswith(base) else 1
                candidates.append((rank, -st.st_mtime, entry.path, st))
        candidates.sort(key=lambda c: (c[0], c[1]))
        for _rank, _m, path, _st in candidates[:_COPY_CANDIDATES]:
            try:  # not _try_open: an unrelated unreadable file here is not this source's error
                fd = os.open(path, _OPEN_FLAGS)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if self._matches(fd, st, f):
                    return path, fd, st
            except OSError:
                pass
            os.close(fd)
        return None

    def _relocate(self, f: _File, out: list[tuple[_File, Batch, int]], now: float) -> None:
        """A stream whose descriptor is closed lost its path: find it renamed, or its copy, or give it up."""
        found = self._find_in_dirs(f, same_inode=True)
        how = "renamed"
        if found is None:
            found = self._find_in_dirs(f, same_inode=False)
            how = "copy"
        if found is None:
            self._lose(f, out, "rotated file not found (compressed or deleted?)")
            return
        path, fd, st = found
        self._files.pop(f, None)
        if self._by_id.get(f.ident) is f:
            del self._by_id[f.ident]
        self._attach(f, fd, st, path, now)
        log.info("tail.rotated_file_found", source=self.config.name, path=path, how=how, offset=f.offset)
        self._start_draining(f, f"found {how} after rotation")

    def _lose(self, f: _File, out: list[tuple[_File, Batch, int]], reason: str) -> None:
        lost = max(0, f.size - f.offset)
        self.stats.bytes_lost += lost
        log.warning(
            "tail.stream_lost",
            source=self.config.name,
            path=f.path,
            key=f.key,
            offset=f.offset,
            known_unread_bytes=lost,
            reason=reason,
        )
        lines = []
        if f.pending:
            lines.append("\n".join(f.pending))
            f.pending = []
        self._finish(out, f, lines)

    # ---------------------------------------------------------------------------------- reading a stream

    def _service(self, f: _File, out: list[tuple[_File, Batch, int]], now: float) -> int:
        """Check one stream for truncation/deletion, read one chunk, flush timeouts, finish if drained."""
        if f.fd is None:
            if not self._reopen(f, out, now):
                return 0
        assert f.fd is not None
        st = os.fstat(f.fd)
        if st.st_nlink == 0 and not f.draining:
            self._start_draining(f, "deleted")
        if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            if self._rewritten(f, st):
                self._truncated(f, st, out, now)
            f.size, f.mtime_ns = st.st_size, st.st_mtime_ns
        lines: Sequence[str] = []
        data: bytes | None = None
        n = 0
        if f.read_pos < st.st_size:
            lines, data, n = self._read(f, st.st_size, now)
            if f.read_pos < st.st_size:
                self._ready[f] = None
        if f.last_error is not None and n:
            f.last_error = None
        ml = self.config.multiline
        if ml and f.pending and now - f.pending_last >= ml.timeout and f.read_pos >= st.st_size:
            lines = [*lines, "\n".join(f.pending)]
            f.pending = []
        if f.draining and f.read_pos >= st.st_size:
            if n or f.idle_since is None:
                f.idle_since = now
            if now - f.idle_since >= self.config.rotate_wait:
                self._finish(out, f, lines)
                return n
        elif f.draining:
            f.idle_since = None
        self._emit(out, f, lines, data)
        return n

    def _needs_attention(self, f: _File) -> bool:
        return (
            f.draining
            or f.last_error is not None
            or (bool(f.pending) and self._ml_rx is not None)
            or (f.fd is None and f in self._attention)
        )

    def _reopen(self, f: _File, out: list[tuple[_File, Batch, int]], now: float) -> bool:
        """Re-open a stream closed to respect ``max_open_files``; it may have been rotated meanwhile."""
        if not self._make_room():
            self._attention[f] = None  # retried every poll_interval; not "busy" (that would spin)
            return False
        fd = self._try_open(f.path)
        if fd is None:
            if f.path not in self._errors:
                self._relocate(f, out, now)
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != f.ident:
            os.close(fd)
            self._relocate(f, out, now)
            return False
        f.fd = fd
        self._open_count += 1
        self.stats.files_opened += 1
        f.last_activity = now
        return True

    def _rewritten(self, f: _File, st: os.stat_result) -> bool:
        """Truncated (copytruncate, ``: > file``) or rewritten in place, even if it grew past our offset."""
        assert f.fd is not None
        if st.st_size < f.read_pos or st.st_size < f.size:
            return True
        head = pread_exact(f.fd, self.config.fingerprint_bytes, 0)
        if f.head is not None:
            common = min(len(head), len(f.head))
            if head[:common] != f.head[:common]:
                return True
        if f.tail and pread_exact(f.fd, len(f.tail), f.offset - len(f.tail)) != f.tail:
            return True
        if f.head is None or len(head) > len(f.head):
            f.head = head
        return False

    def _truncated(self, f: _File, st: os.stat_result, out: list[tuple[_File, Batch, int]], now: float) -> None:
        """End the old content's stream (finish it from a rotated copy when one exists) and restart at 0."""
        self.stats.truncations += 1
        copy = None
        if f.key is not None or f.pending or f.offset < f.size:
            copy = self._find_in_dirs(f, same_inode=False)
        log.warning(
            "tail.truncated",
            source=self.config.name,
            path=f.path,
            offset=f.offset,
            copy=copy[0] if copy else None,
        )
        if copy is not None:
            path, fd, cst = copy
            c = _File(path=path, dev=cst.st_dev, ino=cst.st_ino, key=f.key)
            c.offset = c.read_pos = f.offset
            c.skipping, c.tail, c.pending = f.skipping, f.tail, f.pending
            c.tail_fp, c.tail_len = f.tail_fp, f.tail_len
            c.pending_start, c.pending_last = f.pending_start, f.pending_last
            c.ckpt_off, c.ckpt_skip, c.delivered_off = f.ckpt_off, f.ckpt_skip, f.delivered_off
            c.head = f.head
            self._attach(c, fd, cst, path, now)
            self._start_draining(c, "copy of a truncated file")
        elif f.key is not None or f.pending:
            self.stats.bytes_lost += max(0, f.size - f.offset)
            lines = ["\n".join(f.pending)] if f.pending else []
            old = _File(path=f.path, dev=f.dev, ino=f.ino, key=f.key, head=f.head, tail=f.tail)
            old.offset, old.skipping, old.ckpt_off = f.offset, f.skipping, f.ckpt_off
            self._emit(out, old, lines, None, finished=True)
        f.key = None
        f.head = pread_exact(f.fd, self.config.fingerprint_bytes, 0) if f.fd is not None else b""
        f.tail = b""
        f.offset = f.read_pos = 0
        f.skipping = False
        f.pending = []
        f.ckpt_off = f.delivered_off = 0
        f.ckpt_skip = False
        f.size = 0

    def _read(self, f: _File, size: int, now: float) -> tuple[Sequence[str], bytes | None, int]:
        """Read one chunk and split it into complete lines; hold back a partial last line."""
        assert f.fd is not None
        # Read from the start of the held-back partial line (re-reading it, at most max_line_bytes) rather
        # than concatenating it to the new bytes: one buffer, no extra copy of a 1 MiB chunk.
        start = f.read_pos if f.skipping else f.offset
        held = f.read_pos - start
        buf = os.pread(f.fd, min(self.config.read_chunk_bytes + held, size - start), start)
        n = len(buf) - held
        if n <= 0:
            return [], None, 0
        f.read_pos = start + len(buf)
        f.last_activity = now
        self.stats.bytes_read += n
        if f.skipping:
            nl = buf.find(b"\n")
            if nl < 0:
                self.stats.bytes_skipped += n
                f.offset = f.read_pos
                f.tail = buf[-_TAIL_BYTES:] if n >= _TAIL_BYTES else self._tail_bytes(f, f.offset)
                return [], None, n
            self.stats.bytes_skipped += nl
            f.skipping = False
            buf = buf[nl + 1 :]
            start += nl + 1
            f.offset = start
            data = buf
        else:
            data = buf
        max_line = self.config.max_line_bytes
        last_nl = data.rfind(b"\n")
        complete = data[:last_nl] if last_nl >= 0 else b""
        rest = data[last_nl + 1 :] if last_nl >= 0 else data
        texts: list[str] = []
        chunk: LineChunk | None = None
        starts: list[int] = []
        fast = True
        if last_nl >= 0:
            maybe_long = len(complete) > max_line and self._may_have_long_line(complete)
            chunk = None if maybe_long else self._chunk(complete)
            if chunk is None:
                texts, starts, fast = self._split(f, complete, start, maybe_long)
            f.offset = start + last_nl + 1
        if len(rest) > max_line:
            line_start = start + (last_nl + 1 if last_nl >= 0 else 0)
            if chunk is not None:
                texts, chunk = list(chunk), None
            texts.append(self._truncate(f, rest))
            starts.append(line_start)
            self.stats.bytes_skipped += len(rest) - max_line
            f.skipping = True
            f.offset = f.read_pos
            fast = False
        if f.offset > 0:
            if last_nl >= _TAIL_BYTES and not f.skipping:
                f.tail = data[last_nl + 1 - _TAIL_BYTES : last_nl + 1]
            else:
                f.tail = self._tail_bytes(f, f.offset)
        if chunk is not None:
            self.stats.lines_read += len(chunk)
            return chunk, None, n
        self.stats.lines_read += len(texts)
        if self._ml_rx is not None:
            return self._assemble(f, texts, starts, now), None, n
        if not texts:
            return [], None, n
        if fast and self._utf8:
            return texts, complete, n
        return texts, "\n".join(texts).encode("utf-8", "surrogatepass"), n

    def _chunk(self, complete: bytes) -> LineChunk | None:
        """Complete lines (none over-long: the caller checked) handed on undecoded (see agent/lines.py): the
        common case of valid UTF-8 without multiline records. None sends the chunk down the per-line path."""
        if self._ml_rx is not None or not self._utf8:
            return None
        ascii = complete.isascii()
        if not ascii:
            try:
                complete.decode("utf-8")  # validity only; the matcher decodes the few lines it needs
            except UnicodeDecodeError:
                return None
        return LineChunk(complete, complete.count(b"\n") + 1, ascii=ascii)

    def _split(self, f: _File, complete: bytes, start: int, maybe_long: bool) -> tuple[list[str], list[int], bool]:
        """Decode complete lines; the fast path is one decode and one split per chunk (no per-line work).
        ``maybe_long``: :meth:`_may_have_long_line` of the chunk, from the caller."""
        max_line = self.config.max_line_bytes
        try:
            text = complete.decode(self._encoding)
        except UnicodeDecodeError:
            return self._split_slow(f, complete.split(b"\n"), start)
        texts = text.split("\n")
        parts: list[bytes] | None = None
        if maybe_long:
            parts = complete.split(b"\n")
            if max(map(len, parts)) > max_line:
                return self._split_slow(f, parts, start)
        starts: list[int] = []
        if self._ml_rx is not None:
            if parts is None:
                parts = complete.split(b"\n")
            pos = start
            for p in parts:
                starts.append(pos)
                pos += len(p) + 1
        return texts, starts, True

    def _may_have_long_line(self, complete: bytes) -> bool:
        """Cheap test for a line longer than max_line_bytes: ~2 C-level find() calls per max_line_bytes.

        Any line longer than M bytes fully contains one of the aligned windows of M // 2 bytes, so if every
        window holds a newline, no line is too long (exact check only when a window has none).
        """
        half = max(1, self.config.max_line_bytes // 2)
        find = complete.find
        for pos in range(0, len(complete) - half + 1, half):
            if find(b"\n", pos, pos + half) < 0:
                return True
        return False

    def _split_slow(self, f: _File, parts: list[bytes], start: int) -> tuple[list[str], list[int], bool]:
        max_line = self.config.max_line_bytes
        texts: list[str] = []
        starts: list[int] = []
        pos = start
        for p in parts:
            starts.append(pos)
            pos += len(p) + 1
            if len(p) > max_line:
                self.stats.bytes_skipped += len(p) - max_line
                texts.append(self._truncate(f, p))
            else:
                texts.append(self._decode(f, p))
        return texts, starts, False

    def _decode(self, f: _File, raw: bytes) -> str:
        try:
            return raw.decode(self._encoding)
        except UnicodeDecodeError:
            _tls.replaced = 0
            text = raw.decode(self._encoding, "dutytail.count")
            self._count_replaced(f, _tls.replaced)
            return text

    def _truncate(self, f: _File, raw: bytes) -> str:
        """Keep the first ``max_line_bytes`` bytes, never splitting a multi-byte character."""
        self.stats.lines_truncated += 1
        if not f.warned_long:
            f.warned_long = True
            log.warning(
                "tail.line_truncated",
                source=self.config.name,
                path=f.path,
                max_line_bytes=self.config.max_line_bytes,
            )
        _tls.replaced = 0
        decoder = codecs.getincrementaldecoder(self._encoding)("dutytail.count")
        text = decoder.decode(raw[: self.config.max_line_bytes], final=False)
        if _tls.replaced:
            self._count_replaced(f, _tls.replaced)
        return text

    def _count_replaced(self, f: _File, count: int) -> None:
        self.stats.bytes_replaced += count
        if not f.warned_encoding:
            f.warned_encoding = True
            log.warning("tail.invalid_encoding", source=self.config.name, path=f.path, encoding=self._encoding)

    def _assemble(self, f: _File, texts: list[str], starts: list[int], now: float) -> list[str]:
        """Group lines into multiline records; the checkpoint stays at the start of the pending record."""
        assert self._ml_rx is not None and self.config.multiline is not None
        rx = self._ml_rx
        max_lines = self.config.multiline.max_lines
        records: list[str] = []
        for text, s in zip(texts, starts, strict=True):
            if f.pending and rx.search(text):
                records.append("\n".join(f.pending))
                f.pending = []
            if not f.pending:
                f.pending_start = s
            f.pending.append(text)
            if len(f.pending) >= max_lines:
                records.append("\n".join(f.pending))
                f.pending = []
        if texts:
            f.pending_last = now
        if f.pending:
            self._attention[f] = None
        return records

    def _tail_bytes(self, f: _File, off: int) -> bytes:
        if off <= 0 or f.fd is None:
            return b""
        k = min(_TAIL_BYTES, off)
        return pread_exact(f.fd, k, off - k)

    # ------------------------------------------------------------------------------------ ending a stream

    def _start_draining(self, f: _File, reason: str) -> None:
        if not f.draining:
            if f.fd is not None:
                # The rotated name (app.log.1) for status and for the checkpoint's search directory.
                with contextlib.suppress(OSError):
                    current = os.readlink(f"/proc/self/fd/{f.fd}")
                    if current.startswith("/") and not current.endswith(" (deleted)"):
                        f.path = current
            f.draining = True
            self._attention[f] = None
            f.drain_reason = reason
            f.idle_since = None
            self.stats.rotations += 1
            log.info("tail.draining", source=self.config.name, path=f.path, reason=reason, offset=f.offset)

    def _finish(self, out: list[tuple[_File, Batch, int]], f: _File, read: Sequence[str]) -> None:
        """The stream is done for good: emit what is left (a last unterminated line too) and forget it."""
        lines = list(read)
        if f.read_pos > f.offset and not f.skipping and f.fd is not None:
            raw = pread_exact(f.fd, f.read_pos - f.offset, f.offset)
            text = self._truncate(f, raw) if len(raw) > self.config.max_line_bytes else self._decode(f, raw)
            self.stats.lines_read += 1
            f.offset = f.read_pos
            if self._ml_rx is not None:
                lines.extend(self._assemble(f, [text], [f.offset - len(raw)], time.monotonic()))
            else:
                lines.append(text)
        if f.pending:
            lines.append("\n".join(f.pending))
            f.pending = []
        self._emit(out, f, lines, None, finished=True)
        self._close_fd(f)
        self._files.pop(f, None)
        self._ready.pop(f, None)
        self._attention.pop(f, None)
        if self._by_id.get(f.ident) is f:
            del self._by_id[f.ident]
        log.info("tail.file_finished", source=self.config.name, path=f.path, offset=f.offset)

    # ----------------------------------------------------------------------------------------- emitting

    def _emit(
        self,
        out: list[tuple[_File, Batch, int]],
        f: _File,
        lines: Sequence[str],
        data: bytes | None,
        *,
        finished: bool = False,
    ) -> None:
        """Hand out lines with the checkpoint right after them; bare checkpoints only when position moved."""
        if f.pending:
            off, skip = f.pending_start, False
        else:
            off, skip = f.offset, f.skipping
        if not lines and not finished and off == f.ckpt_off and skip == f.ckpt_skip:
            return
        if finished and f.key is None and not lines:
            return  # nothing was ever handed out for this stream: nothing to forget
        tail = f.tail if off == f.offset else self._tail_bytes(f, off)
        key = self._ensure_key(f)
        batch = Batch(
            source=self.config.name,
            path=f.path,
            lines=lines,
            checkpoint=Checkpoint(key, self._state(f, off, skip, tail)),
            finished=finished,
            data=data if lines and data is not None else None,
        )
        f.ckpt_off, f.ckpt_skip = off, skip
        self.stats.batches += 1
        out.append((f, batch, off))

    def _emit_forget(self, out: list[tuple[_File, Batch, int]], key: str, state: str) -> None:
        path = ""
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            path = str(json.loads(state).get("path", ""))
        dummy = _File(path=path, dev=0, ino=0, key=key)
        self.stats.batches += 1
        out.append((dummy, Batch(self.config.name, path, [], Checkpoint(key, state), finished=True), 0))

    def _ensure_key(self, f: _File) -> str:
        if f.key is None:
            base = f"{f.dev}:{f.ino}:{fingerprint(f.head or b'')}"
            key, n = base, 1
            while key in self._keys:
                n += 1
                key = f"{base}~{n}"
            self._keys.add(key)
            f.key = key
        return f.key

    def _state(self, f: _File, off: int, skip: bool, tail: bytes) -> str:
        head = f.head
        fp, fp_len = (fingerprint(head), len(head)) if head is not None else (f.fp, f.fp_len)
        return json.dumps(
            {
                "v": _STATE_VERSION,
                "path": f.path,
                "dev": f.dev,
                "ino": f.ino,
                "fp": fp,
                "fpl": fp_len,
                "off": off,
                "tfp": fingerprint(tail),
                "tl": len(tail),
                "skip": skip,
            },
            separators=(",", ":"),
        )

    def _restore(self, key: str, ckpt: Checkpoint) -> _File | None:
        try:
            s = json.loads(ckpt.state)
            if s.get("v") != _STATE_VERSION:
                raise ValueError(f"state version {s.get('v')!r}")
            f = _File(path=str(s["path"]), dev=int(s["dev"]), ino=int(s["ino"]), key=key)
            f.fp, f.fp_len = str(s["fp"]), int(s["fpl"])
            f.offset = f.read_pos = f.ckpt_off = f.delivered_off = int(s["off"])
            f.tail_fp, f.tail_len = str(s.get("tfp", "")), int(s.get("tl", 0))
            f.skipping = f.ckpt_skip = bool(s.get("skip", False))
            f.verified = False
            f.size = f.offset
            return f
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("tail.bad_checkpoint", source=self.config.name, key=key, error=str(exc))
            return None

    # ---------------------------------------------------------------------------------------- errors

    def _set_error(self, path: str, msg: str) -> None:
        if self._errors.get(path) != msg:
            self._errors[path] = msg
            self.stats.errors += 1
            log.warning("tail.file_error", source=self.config.name, path=path, error=msg)

    def _clear_error(self, path: str) -> None:
        if self._errors.pop(path, None) is not None:
            log.info("tail.file_recovered", source=self.config.name, path=path)

    def _file_error(self, f: _File, exc: Exception) -> None:
        self._attention[f] = None
        msg = f"{type(exc).__name__}: {exc}"
        if f.last_error != msg:
            f.last_error = msg
            self.stats.errors += 1
            log.warning("tail.read_error", source=self.config.name, path=f.path, error=msg)
