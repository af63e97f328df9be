"""The sender's in-memory view of its queue: the head it may send from, and deliveries not yet recorded.

A busy sender must not re-read SQLite per event, and must not commit one delete per delivered event:
the window holds up to ``SIZE`` queued events (read in id order, so per-key order is kept), and deletes
of delivered events are committed in batches (one transaction, one thread hop for many events). A crash
before the delete re-sends them in id order, so per-key order holds there too.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Container

import structlog

from agent.outbox import DeliveryQueue, PendingEvent

log = structlog.get_logger(__name__)


class SendWindow:
    """One output's queue head in memory, plus its accepted-but-unrecorded deliveries."""

    SIZE = 256  # how far past blocked keys the sender looks for sendable events

    def __init__(self, queue: DeliveryQueue, output: str, on_change: Callable[[], None]) -> None:
        self._queue = queue
        self._output = output
        self._on_change = on_change  # the sender's wake-up: slots were freed
        self.events: dict[int, PendingEvent] = {}
        self._fetched_upto = 0  # highest event id loaded into the window
        self.maybe_more = True  # the store may hold rows beyond the window
        self._acked: list[int] = []  # delivered, delete not yet handed to the store
        self.unrecorded: set[int] = set()  # delivered, delete not yet committed
        self._ack_task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Nothing left in memory, nothing known in the store, every delivery recorded."""
        return not self.events and not self.maybe_more and not self.unrecorded

    def key_waiting(self, key: str) -> bool:
        return any(e.alert_key == key for e in self.events.values())

    def forget(self, in_flight: Container[int]) -> None:
        """Rows vanished under us (drop_oldest, expiry): keep what is in flight, reload the head."""
        self.events = {i: e for i, e in self.events.items() if i in in_flight}
        self._fetched_upto = max(self.events, default=0)
        self.maybe_more = True

    async def refill(self) -> None:
        if not self.maybe_more or len(self.events) >= self.SIZE:
            return
        want = self.SIZE - len(self.events)
        rows = await self._queue.head(self._output, want, after_id=self._fetched_upto)
        for row in rows:
            self._fetched_upto = row.id
            if row.id not in self.unrecorded:
                self.events[row.id] = row
        if len(rows) < want:
            self.maybe_more = False

    def remove(self, event_id: int) -> None:
        """The event left the queue another way (dead-lettered)."""
        self.events.pop(event_id, None)

    def ack(self, event_id: int) -> None:
        """Flashduty accepted it: never send it again; its delete is committed with the next batch."""
        self.events.pop(event_id, None)
        self._acked.append(event_id)
        self.unrecorded.add(event_id)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._flush_acks(), name=f"acks-{self._output}")

    async def _flush_acks(self) -> None:
        delay = 1.0
        while self._acked:
            ids, self._acked = self._acked, []
            try:
                await self._queue.delivered(ids)
            except sqlite3.Error as exc:
                # The store cannot record deliveries (disk full). Keep them pending — never re-send what
                # Flashduty accepted — and retry; the outbox reports disk_full meanwhile.
                self._acked = ids + self._acked
                log.warning("delivery_not_recorded_retrying", output=self._output, events=len(ids),
                            error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self.unrecorded.difference_update(ids)
            self._on_change()  # slots freed
            delay = 1.0

    async def close(self) -> None:
        """Commit the deletes of what was delivered."""
        if self._ack_task is not None:
            await asyncio.shield(self._ack_task)
        if self._acked:
            await self._flush_acks()
