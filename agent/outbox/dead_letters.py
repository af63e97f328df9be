"""Dead letters: events the API rejected for good, kept with the server's answer until an operator acts.

``dutytail dead-letters list|retry|purge`` opens the store from another process while the agent may run;
a retry re-queues at the back of the queue, and a running sender notices within its 5 s safety net.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from agent.outbox.model import PendingEvent
from agent.outbox.store import INSERT_EVENT, Store


class DeadLetters:
    """Move aside, list, re-queue and purge rejected events."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, event: PendingEvent, *, status: int | None, error_code: str, message: str,
                  request_id: str) -> None:
        """Move a queued event the API rejected for good aside, with everything support will ask for."""
        store = self._store

        def _move() -> None:
            db = store.db
            with db:
                db.execute("BEGIN")
                db.execute(
                    "INSERT INTO dead_letters(output, alert_key, body, created, failed_at, attempts, status, "
                    "error_code, message, request_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (event.output, event.alert_key, event.body, event.created, time.time(), event.attempts + 1,
                     status, error_code, message[:1000], request_id),
                )
                db.execute("DELETE FROM events WHERE id=?", (event.id,))
            store.stats.depth -= 1
            store.stats.bytes -= len(event.body)
            store.stats.dead_letters += 1

        await store.write(_move)
        store.freed()

    async def count(self) -> int:
        """How many wait now (another process may have retried or purged some: read, not remembered)."""
        def _count() -> int:
            count = int(self._store.db.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
            self._store.stats.dead_letters = count
            return count

        return await self._store.call(_count)

    async def list(self) -> list[dict[str, Any]]:
        def _read() -> list[dict[str, Any]]:
            db = self._store.db
            db.row_factory = sqlite3.Row
            try:
                rows = db.execute("SELECT * FROM dead_letters ORDER BY id").fetchall()
                return [dict(r) for r in rows]
            finally:
                db.row_factory = None

        return await self._store.call(_read)

    async def retry(self, ids: list[int] | None) -> int:
        """Re-queue dead letters (all when ``ids`` is None) at the back of the queue."""
        store = self._store

        def _retry() -> int:
            db = store.db
            where, args = ("", ()) if ids is None else (
                f"WHERE id IN ({','.join('?' * len(ids))})", tuple(ids))
            with db:
                db.execute("BEGIN")
                rows = db.execute(f"SELECT id, output, alert_key, body FROM dead_letters {where} ORDER BY id",
                                  args).fetchall()
                now = time.time()
                db.executemany(INSERT_EVENT, [(o, k, b, len(b), now) for _, o, k, b in rows])
                db.executemany("DELETE FROM dead_letters WHERE id=?", [(r[0],) for r in rows])
            store.refresh_stats_sync()
            return len(rows)

        count = await store.call(_retry)
        store.added()
        return count

    async def purge(self, ids: list[int] | None) -> int:
        store = self._store

        def _purge() -> int:
            db = store.db
            with db:
                db.execute("BEGIN")
                if ids is None:
                    count = db.execute("DELETE FROM dead_letters").rowcount
                else:
                    count = db.execute(f"DELETE FROM dead_letters WHERE id IN ({','.join('?' * len(ids))})",
                                       tuple(ids)).rowcount
            store.refresh_stats_sync()
            return count

        return await store.call(_purge)
