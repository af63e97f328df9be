"""The SQLite side of the outbox: schema, connection, the one store thread and the writer's transaction.

SQLite runs on one dedicated thread and the connection never leaves it: every read and write is a job
handed to that thread (``submit``/``call``), so jobs run one at a time in the order they were handed
over. The ordered writer relies on that order, and the event loop only ever awaits futures.

Durability: WAL + ``synchronous=NORMAL`` survives any process crash (kill -9); a power loss may roll back
the last commits but never corrupts. ``fsync: always`` (``synchronous=FULL``) survives power loss too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from agent.outbox.config import OutboxConfig
from agent.outbox.model import Change, OutboxStats, Reassert, encode_body

log = structlog.get_logger(__name__)
T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The store exists but cannot be used now (permissions, a full disk): kept as it is, never moved aside
    (that would re-read every file, or drop what was queued); the message says what to fix."""


_CORRUPT = ("file is not a database", "malformed", "integrity check failed", "not a database")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_by_output ON events(output, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    output TEXT NOT NULL,
    alert_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    failed_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    status INTEGER,
    error_code TEXT,
    message TEXT,
    request_id TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (source, key)
);
CREATE TABLE IF NOT EXISTS alerts (
    alert_key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated REAL NOT NULL
);
"""

INSERT_EVENT = "INSERT INTO events(output, alert_key, body, size, created) VALUES (?,?,?,?,?)"


class Store:
    """The outbox file, its thread and its counters; the writer, the queue and dead letters share one."""

    def __init__(self, state_dir: str | os.PathLike[str], config: OutboxConfig) -> None:
        self.path = Path(state_dir) / "outbox.db"
        self.config = config
        self.stats = OutboxStats()
        self.oldest_created: float | None = None  # of the queued events; None when the queue is empty
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._inode = 0  # of the file the connection opened: deleted or replaced when the path shows another
        self._added: list[Callable[[], None]] = []
        self._removed: list[Callable[[], None]] = []
        self._freed: list[Callable[[], None]] = []

    # --- lifecycle and the store thread ----------------------------------------------------------------

    async def open(self) -> None:
        await self.call(self._open_sync)

    async def close(self) -> None:
        await self.call(self._close_sync)
        self._executor.shutdown(wait=True)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Hand ``fn`` to the store thread now; jobs run one at a time in hand-off order."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.submit(fn, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the store thread; a failure is recorded (disk_full shows in health) and re-raised."""
        try:
            result = await self.call(fn, *args)
        except sqlite3.Error as exc:
            self.note_write_error(exc)
            raise
        self.note_write_ok()
        return result

    @property
    def db(self) -> sqlite3.Connection:
        """The connection; only on the store thread."""
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    # --- what changed, for those who wait on it --------------------------------------------------------

    def on_added(self, callback: Callable[[], None]) -> None:
        self._added.append(callback)

    def on_removed(self, callback: Callable[[], None]) -> None:
        self._removed.append(callback)

    def on_freed(self, callback: Callable[[], None]) -> None:
        self._freed.append(callback)

    def added(self) -> None:
        """Events were queued (on the loop, after the commit)."""
        for callback in self._added:
            callback()

    def freed(self) -> None:
        """Queued rows left the queue: room for a writer blocked by ``on_full: block_sources``."""
        for callback in self._freed:
            callback()

    def count_drop(self, reason: str, count: int) -> None:
        """The outbox itself removed queued rows (drop_oldest, expiry): counted, logged, senders told."""
        for callback in self._removed:
            callback()
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + count
        log.warning("outbox_events_dropped", reason=reason, count=count, total=self.stats.dropped[reason])

    def note_write_error(self, exc: sqlite3.Error) -> None:
        disk_full = isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()
        if disk_full and not self.stats.disk_full:
            log.error("outbox_disk_full", error=str(exc), path=str(self.path))
        self.stats.disk_full = disk_full
        self.stats.last_error = str(exc)

    def note_write_ok(self) -> None:
        if self.stats.disk_full:
            log.info("outbox_disk_space_recovered", path=str(self.path))
            self.stats.disk_full = False

    # --- on the store thread ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if self.config.fsync == 'always' else 'NORMAL'}")
        db.execute("PRAGMA busy_timeout=5000")
        # Keep the WAL small (checkpoint every 128 pages, truncate it to 512 KiB): on a nearly full state
        # disk the default 4 MiB WAL alone could fill it.
        db.execute("PRAGMA wal_autocheckpoint=128")
        db.execute("PRAGMA journal_size_limit=524288")
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            db.close()
            raise sqlite3.DatabaseError(f"integrity check failed: {ok}")
        db.executescript(SCHEMA)
        return db

    def _open_sync(self) -> None:
        self._check_access()
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if not any(sign in str(exc) for sign in _CORRUPT):
                # disk full, read-only file system, I/O error: the store is fine, this host is not
                raise StoreUnavailable(f"cannot open the outbox {self.path}: {exc}; the store is kept as it is "
                                       f"(free space or fix the file system, then start again)") from exc
            # Only real corruption is moved aside: keep the bad file for forensics and start fresh, loudly.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
            log.error("outbox_store_corrupt_moved_aside", path=str(self.path), moved_to=str(aside), error=str(exc))
            self.stats.store_reset = str(aside)
            self._db = self._connect()
        self._inode = os.stat(self.path).st_ino
        self.refresh_stats_sync()

    def _check_access(self) -> None:
        """Permissions are an operator's to fix, not a reason to start from nothing (that re-read every file,
        or with ``start_at: end`` silently dropped what was queued)."""
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if path.exists() and not os.access(path, os.R_OK | os.W_OK):
                raise StoreUnavailable(f"{path} is not readable and writable by this user (uid {os.getuid()}); "
                                       f"fix its owner or mode (the store is kept as it is)")
        directory = self.path.parent
        if directory.exists() and not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            raise StoreUnavailable(f"state_dir {directory} is not writable by this user (uid {os.getuid()}); "
                                   f"fix its owner or mode")

    def verify_sync(self) -> str:
        """Is the open store still the file at its path? If the state directory was deleted (or the file
        replaced) the connection still holds every queued event in the unlinked file: copy it to a new
        file at the path and continue there. Returns what happened, "" when nothing did."""
        try:
            if os.stat(self.path).st_ino == self._inode:
                return ""
        except FileNotFoundError:
            pass
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self.db.backup(fresh)
        except sqlite3.Error:
            fresh.close()
            raise
        fresh.close()
        old, self._db = self._db, None
        if old is not None:
            old.close()
        self._db = self._connect()
        self._inode = os.stat(self.path).st_ino
        self.refresh_stats_sync()
        return f"the outbox file {self.path} was deleted or replaced while in use; recreated from the open store"

    def _close_sync(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def truncate_wal_sync(self) -> None:
        """Give back the WAL's space: on a full disk a checkpoint that truncates it may be all the room."""
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def refresh_stats_sync(self) -> None:
        db = self.db
        depth, size, oldest = db.execute("SELECT count(*), coalesce(sum(size),0), min(created) FROM events").fetchone()
        self.stats.depth, self.stats.bytes, self.oldest_created = depth, size, oldest
        self.stats.dead_letters = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]

    def read_checkpoints_sync(self, source: str) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, state FROM checkpoints WHERE source=?", (source,)).fetchall())

    def read_alert_states_sync(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT alert_key, state FROM alerts").fetchall())

    def apply_sync(self, changes: Sequence[Change]) -> tuple[int, int]:
        """Apply changes in order in one transaction (all or none); returns (events added, events dropped)."""
        db = self.db
        now = time.time()
        added = added_bytes = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                if isinstance(change, Reassert):
                    size = self._reassert_sync(change, now)
                    added += 1 if size else 0
                    added_bytes += size
                    continue
                rows = []
                for ev in change.events:
                    body = encode_body(ev.body)
                    rows.append((ev.output, ev.alert_key, body, len(body), now))
                    added_bytes += len(body)
                if rows:
                    db.executemany(INSERT_EVENT, rows)
                    added += len(rows)
                if change.checkpoints:
                    db.executemany(
                        "INSERT INTO checkpoints(source, key, state, updated) VALUES (?,?,?,?) "
                        "ON CONFLICT(source, key) DO UPDATE SET state=excluded.state, updated=excluded.updated",
                        [(s, k, st, now) for s, k, st in change.checkpoints],
                    )
                if change.forget_checkpoints:
                    db.executemany("DELETE FROM checkpoints WHERE source=? AND key=?", change.forget_checkpoints)
                if change.alerts:
                    db.executemany(
                        "INSERT INTO alerts(alert_key, state, updated) VALUES (?,?,?) "
                        "ON CONFLICT(alert_key) DO UPDATE SET state=excluded.state, updated=excluded.updated",
                        [(k, st, now) for k, st in change.alerts],
                    )
                if change.forget_alerts:
                    db.executemany("DELETE FROM alerts WHERE alert_key=?", [(k,) for k in change.forget_alerts])
            dropped = 0
            if self.config.on_full == "drop_oldest" and self.stats.bytes + added_bytes > self.config.max_bytes:
                dropped = self._drop_oldest_sync(self.stats.bytes + added_bytes - self.config.max_bytes)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self.stats.committed_events += added
        if dropped:
            self.refresh_stats_sync()
        else:
            self.stats.depth += added
            self.stats.bytes += added_bytes
            if added and self.oldest_created is None:
                self.oldest_created = now
        return added, dropped

    def _reassert_sync(self, step: Reassert, now: float) -> int:
        """Inside the writer's transaction: queue ``step.body`` unless an event of its key is queued (one
        committed before, or earlier in this transaction). Returns the bytes added."""
        step.queued = False
        if step.body is None:
            return 0
        queued = self.db.execute("SELECT 1 FROM events WHERE output=? AND alert_key=? LIMIT 1",
                                 (step.output, step.alert_key)).fetchone()
        if queued is not None:
            return 0
        self.db.execute(INSERT_EVENT, (step.output, step.alert_key, step.body, len(step.body), now))
        step.queued = True
        return len(step.body)

    def _drop_oldest_sync(self, excess: int) -> int:
        freed = dropped = 0
        victims = []
        for row_id, size in self.db.execute("SELECT id, size FROM events ORDER BY id"):
            victims.append((row_id,))
            freed += size
            dropped += 1
            if freed >= excess:
                break
        self.db.executemany("DELETE FROM events WHERE id=?", victims)
        return dropped
