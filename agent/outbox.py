"""The on-disk outbox: queued events, dead letters, source checkpoints and open-alert state in one SQLite file.

One store for all of it is the point: a batch's events, the source position that produced them and the
alert state they changed are committed in one transaction, so a crash at any moment neither loses a line
nor sends it twice. SQLite runs on one dedicated thread (the connection never leaves it), commits are
grouped (many source batches per transaction) and the event loop only awaits futures.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict

from agent.events import json_text
from agent.units import ByteSize, Duration

log = structlog.get_logger(__name__)
T = TypeVar("T")

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


def encode_body(body: dict[str, Any]) -> str:
    """The exact JSON text stored and later POSTed (compact; sizes in the bounds are of this text)."""
    return json_text(body)


class OutboxConfig(BaseModel):
    """`outbox:` — how much may wait on disk, for how long, and what happens when it is full."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: ByteSize = 256 * 1024 * 1024
    max_age: Duration = 24 * 3600.0
    on_full: Literal["drop_oldest", "block_sources"] = "drop_oldest"
    fsync: Literal["normal", "always"] = "normal"
    flush_interval: Duration = 0.0  # extra wait for more batches to share a transaction (0: group what is queued)


@dataclass(slots=True)
class QueuedEvent:
    output: str
    alert_key: str
    body: dict[str, Any]


@dataclass(slots=True)
class PendingEvent:
    """An event as the sender sees it."""

    id: int
    output: str
    alert_key: str
    body: str
    created: float
    attempts: int
    next_attempt: float


@dataclass(slots=True)
class Commit:
    """Everything one source batch changes, applied atomically."""

    events: list[QueuedEvent] = field(default_factory=list)
    checkpoints: list[tuple[str, str, str]] = field(default_factory=list)  # (source, key, state)
    forget_checkpoints: list[tuple[str, str]] = field(default_factory=list)  # (source, key)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (alert_key, state json)
    forget_alerts: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.events or self.checkpoints or self.forget_checkpoints or self.alerts or self.forget_alerts)


@dataclass(slots=True)
class OutboxStats:
    depth: int = 0
    bytes: int = 0
    dead_letters: int = 0
    committed_events: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    disk_full: bool = False
    last_error: str = ""
    store_reset: str = ""  # path the corrupt store was moved to, if that happened


class OutboxFull(Exception):
    """Raised to a blocked source when the agent is shutting down while it waits for space."""


class Outbox:
    """Async facade over the SQLite store; every call runs on the store's single thread."""

    def __init__(self, state_dir: str | os.PathLike[str], config: OutboxConfig | None = None,
                 on_drop: Callable[[str, int], None] | None = None) -> None:
        self.path = Path(state_dir) / "outbox.db"
        self.config = config or OutboxConfig()
        self.stats = OutboxStats()
        self._on_drop = on_drop
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[Commit, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._wake_flusher = asyncio.Event()
        self._space = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._removal_listeners: list[Callable[[], None]] = []
        self._closed = False
        self._oldest_created: float | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    async def open(self) -> None:
        await self._call(self._open_sync)
        self._flusher = asyncio.create_task(self._flush_loop(), name="outbox-flush")

    async def close(self) -> None:
        self._closed = True
        self._space.set()
        if self._flusher:
            self._wake_flusher.set()
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._pending:
            await self._flush_now()
        await self._call(self._close_sync)
        self._executor.shutdown(wait=True)

    def on_new_events(self, callback: Callable[[], None]) -> None:
        """Called (on the loop) after a commit added events: the sender's wake-up, so it never polls."""
        self._listeners.append(callback)

    def on_rows_removed(self, callback: Callable[[], None]) -> None:
        """Called after the outbox itself removed queued rows (drop_oldest, expiry, purge)."""
        self._removal_listeners.append(callback)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

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
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            # Never crash-loop on our own state: keep the bad file for forensics and start fresh, loudly.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
            log.error("outbox_store_corrupt_moved_aside", path=str(self.path), moved_to=str(aside), error=str(exc))
            self.stats.store_reset = str(aside)
            self._db = self._connect()
        self._refresh_stats_sync()

    def _close_sync(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self._db = None

    def _refresh_stats_sync(self) -> None:
        db = self._require_db()
        depth, size, oldest = db.execute("SELECT count(*), coalesce(sum(size),0), min(created) FROM events").fetchone()
        self.stats.depth, self.stats.bytes, self._oldest_created = depth, size, oldest
        self.stats.dead_letters = db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    # --- group commit ----------------------------------------------------------------------------------

    async def commit(self, change: Commit) -> None:
        """Durably apply one batch's changes; returns once they are on disk (in WAL).

        Raises sqlite3.OperationalError on disk full; the caller keeps its batch and retries, so nothing
        read is lost and sources pause by backpressure.
        """
        await self.commit_many([change])

    async def commit_many(self, changes: list[Commit]) -> None:
        """Apply several changes in order, in one transaction (all or none)."""
        changes = [c for c in changes if not c.empty()]
        if not changes:
            return
        # Sizing means encoding every body again; only block_sources needs it before the write.
        new_bytes = 0
        if self.config.on_full == "block_sources":
            new_bytes = sum(len(encode_body(e.body)) for c in changes for e in c.events)
        if new_bytes:
            while self.stats.bytes + new_bytes > self.config.max_bytes and self.stats.depth > 0:
                if self._closed:
                    raise OutboxFull("outbox full while shutting down")
                self._space.clear()
                await self._space.wait()
        loop = asyncio.get_running_loop()
        futures = []
        for change in changes:
            future: asyncio.Future[None] = loop.create_future()
            self._pending.append((change, future))
            futures.append(future)
        self._wake_flusher.set()
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _flush_loop(self) -> None:
        while True:
            await self._wake_flusher.wait()
            self._wake_flusher.clear()
            # a short pause lets concurrent sources join the same transaction (group commit)
            await asyncio.sleep(self.config.flush_interval)
            await self._flush_now()

    async def _flush_now(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            added, dropped = await self._call(self._apply_sync, [c for c, _ in batch])
        except sqlite3.Error as exc:
            self._note_write_error(exc)
            if self.stats.disk_full:
                # give back the WAL's space: a checkpoint that truncates it may be all the room there is
                with contextlib.suppress(sqlite3.Error):
                    await self._call(lambda: self._require_db().execute("PRAGMA wal_checkpoint(TRUNCATE)"))
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if self.stats.disk_full:
            log.info("outbox_disk_space_recovered", path=str(self.path))
        self.stats.disk_full = False
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)
        if dropped:
            self._count_drop("outbox_full", dropped)
        if added:
            for listener in self._listeners:
                listener()

    def _apply_sync(self, changes: list[Commit]) -> tuple[int, int]:
        db = self._require_db()
        now = time.time()
        added = added_bytes = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                rows = []
                for ev in change.events:
                    body = encode_body(ev.body)
                    rows.append((ev.output, ev.alert_key, body, len(body), now))
                    added_bytes += len(body)
                if rows:
                    db.executemany(
                        "INSERT INTO events(output, alert_key, body, size, created) VALUES (?,?,?,?,?)", rows
                    )
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
            self._refresh_stats_sync()
        else:
            self.stats.depth += added
            self.stats.bytes += added_bytes
            if added and self._oldest_created is None:
                self._oldest_created = now
        return added, dropped

    def _drop_oldest_sync(self, excess: int) -> int:
        db = self._require_db()
        freed = dropped = 0
        victims = []
        for row_id, size in db.execute("SELECT id, size FROM events ORDER BY id"):
            victims.append((row_id,))
            freed += size
            dropped += 1
            if freed >= excess:
                break
        db.executemany("DELETE FROM events WHERE id=?", victims)
        return dropped

    def _note_write_error(self, exc: sqlite3.Error) -> None:
        disk_full = isinstance(exc, sqlite3.OperationalError) and "full" in str(exc).lower()
        if disk_full and not self.stats.disk_full:
            log.error("outbox_disk_full", error=str(exc), path=str(self.path))
        self.stats.disk_full = disk_full
        self.stats.last_error = str(exc)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a write on the store thread; a failure is recorded (disk_full shows in health) and re-raised."""
        try:
            result = await self._call(fn, *args)
        except sqlite3.Error as exc:
            self._note_write_error(exc)
            raise
        if self.stats.disk_full:
            log.info("outbox_disk_space_recovered", path=str(self.path))
            self.stats.disk_full = False
        return result

    def _count_drop(self, reason: str, count: int) -> None:
        for listener in self._removal_listeners:
            listener()
        self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + count
        log.warning("outbox_events_dropped", reason=reason, count=count, total=self.stats.dropped[reason])
        if self._on_drop:
            self._on_drop(reason, count)

    # --- reads for sources and alerts -----------------------------------------------------------------

    async def checkpoints(self, source: str) -> dict[str, str]:
        def _read() -> dict[str, str]:
            rows = self._require_db().execute("SELECT key, state FROM checkpoints WHERE source=?", (source,))
            return dict(rows.fetchall())

        return await self._call(_read)

    async def alert_states(self) -> dict[str, str]:
        def _read() -> dict[str, str]:
            return dict(self._require_db().execute("SELECT alert_key, state FROM alerts").fetchall())

        return await self._call(_read)

    # --- the sender's side -------------------------------------------------------------------------------

    async def head(self, output: str, limit: int, after_id: int = 0) -> list[PendingEvent]:
        """Queued events of one output with id > after_id, in commit order (the sender keeps per-key order)."""

        def _read() -> list[PendingEvent]:
            rows = self._require_db().execute(
                "SELECT id, output, alert_key, body, created, attempts, next_attempt FROM events "
                "WHERE output=? AND id>? ORDER BY id LIMIT ?",
                (output, after_id, limit),
            )
            return [PendingEvent(*row) for row in rows.fetchall()]

        return await self._call(_read)

    async def has_pending(self, output: str, alert_key: str) -> bool:
        def _read() -> bool:
            row = self._require_db().execute(
                "SELECT 1 FROM events WHERE output=? AND alert_key=? LIMIT 1", (output, alert_key)).fetchone()
            return row is not None

        return await self._call(_read)

    async def delivered(self, event_ids: Iterable[int]) -> None:
        ids = json_text(list(event_ids))

        def _delete() -> None:
            db = self._require_db()
            with db:
                db.execute("BEGIN")
                # one statement for the whole batch: per-id SELECT + DELETE was 8% of the drain's CPU
                gone = [size for (size,) in db.execute(
                    "DELETE FROM events WHERE id IN (SELECT value FROM json_each(?)) RETURNING size", (ids,))]
            self.stats.depth -= len(gone)
            self.stats.bytes -= sum(gone)
            if self.stats.depth <= 0:
                self._oldest_created = None

        await self._write(_delete)
        self._space.set()

    async def reschedule(self, event_id: int, attempts: int, next_attempt: float, error: str) -> None:
        def _update() -> None:
            db = self._require_db()
            db.execute(
                "UPDATE events SET attempts=?, next_attempt=?, last_error=? WHERE id=?",
                (attempts, next_attempt, error[:500], event_id),
            )

        await self._write(_update)

    async def dead_letter(self, event: PendingEvent, *, status: int | None, error_code: str, message: str,
                          request_id: str) -> None:
        """Move an event the API rejected for good aside, with everything support will ask for."""

        def _move() -> None:
            db = self._require_db()
            with db:
                db.execute("BEGIN")
                db.execute(
                    "INSERT INTO dead_letters(output, alert_key, body, created, failed_at, attempts, status, "
                    "error_code, message, request_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (event.output, event.alert_key, event.body, event.created, time.time(), event.attempts + 1,
                     status, error_code, message[:1000], request_id),
                )
                db.execute("DELETE FROM events WHERE id=?", (event.id,))
            self.stats.depth -= 1
            self.stats.bytes -= len(event.body)
            self.stats.dead_letters += 1

        await self._write(_move)
        self._space.set()

    async def expire(self, now: float | None = None) -> int:
        """Drop events older than max_age (counted and logged): past that, an alert is history, not news."""
        cutoff = (now or time.time()) - self.config.max_age

        def _expire() -> int:
            db = self._require_db()
            with db:
                db.execute("BEGIN")
                count = db.execute("DELETE FROM events WHERE created < ?", (cutoff,)).rowcount
            if count:
                self._refresh_stats_sync()
            return count

        if self._oldest_created is None or self._oldest_created >= cutoff:
            return 0
        count = await self._call(_expire)
        if count:
            self._count_drop("expired", count)
            self._space.set()
        return count

    def oldest_age(self, now: float | None = None) -> float | None:
        if self._oldest_created is None:
            return None
        return max(0.0, (now or time.time()) - self._oldest_created)

    # --- dead letters (CLI) -------------------------------------------------------------------------------

    async def dead_letters(self) -> list[dict[str, Any]]:
        def _read() -> list[dict[str, Any]]:
            db = self._require_db()
            db.row_factory = sqlite3.Row
            try:
                rows = db.execute("SELECT * FROM dead_letters ORDER BY id").fetchall()
                return [dict(r) for r in rows]
            finally:
                db.row_factory = None

        return await self._call(_read)

    async def retry_dead_letters(self, ids: list[int] | None) -> int:
        """Re-queue dead letters (all when ``ids`` is None) at the back of the queue."""

        def _retry() -> int:
            db = self._require_db()
            where, args = ("", ()) if ids is None else (
                f"WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
            with db:
                db.execute("BEGIN")
                rows = db.execute(f"SELECT id, output, alert_key, body FROM dead_letters {where} ORDER BY id",
                                  args).fetchall()
                now = time.time()
                db.executemany(
                    "INSERT INTO events(output, alert_key, body, size, created) VALUES (?,?,?,?,?)",
                    [(o, k, b, len(b), now) for _, o, k, b in rows],
                )
                db.executemany("DELETE FROM dead_letters WHERE id=?", [(r[0],) for r in rows])
            self._refresh_stats_sync()
            return len(rows)

        count = await self._call(_retry)
        for listener in self._listeners:
            listener()
        return count

    async def purge_dead_letters(self, ids: list[int] | None) -> int:
        def _purge() -> int:
            db = self._require_db()
            with db:
                db.execute("BEGIN")
                if ids is None:
                    count = db.execute("DELETE FROM dead_letters").rowcount
                else:
                    count = db.execute(f"DELETE FROM dead_letters WHERE id IN ({','.join('?' * len(ids))})",
                                       tuple(ids)).rowcount
            self._refresh_stats_sync()
            return count

        return await self._call(_purge)
