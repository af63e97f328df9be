"""The on-disk outbox: queued events, dead letters, source checkpoints and open-alert state in one SQLite file.

One store for all of it is the point: a batch's events, the source position that produced them and the
alert state they changed are committed in one transaction, so a crash at any moment neither loses a line
nor sends it twice. The parts:

- ``store``: the file, its schema and its one thread (the connection never leaves it);
- ``writer``: THE ordered group-commit queue of the agent, with backpressure and retry (``Outbox.writer``);
- ``queue``: what senders read and record (``Outbox.queue``);
- ``dead_letters``: rejected events kept for the operator (``Outbox.dead_letters``).

Durability: WAL + ``synchronous=NORMAL`` survives any process crash (kill -9); a power loss may roll back
the last commits but never corrupts. ``fsync: always`` (``synchronous=FULL``) survives power loss too.
"""

from __future__ import annotations

import asyncio
import os
import time

import structlog

from agent.outbox.config import OutboxConfig
from agent.outbox.dead_letters import DeadLetters
from agent.outbox.lock import StateDirBusy, StateLock
from agent.outbox.model import (
    Change,
    Commit,
    OutboxFull,
    OutboxStats,
    PendingEvent,
    QueuedEvent,
    Reassert,
    encode_body,
)
from agent.outbox.queue import DeliveryQueue
from agent.outbox.store import Store, StoreUnavailable
from agent.outbox.writer import MAX_QUEUED_CHANGES, MAX_QUEUED_EVENTS, Writer

log = structlog.get_logger(__name__)

__all__ = [
    "MAX_QUEUED_CHANGES",
    "MAX_QUEUED_EVENTS",
    "Change",
    "Commit",
    "DeadLetters",
    "DeliveryQueue",
    "Outbox",
    "OutboxConfig",
    "OutboxFull",
    "OutboxStats",
    "PendingEvent",
    "QueuedEvent",
    "Reassert",
    "StateDirBusy",
    "StoreUnavailable",
    "Writer",
    "encode_body",
]


class Outbox:
    """Opens and closes the store and hands out its parts: ``writer`` (every change, in order), ``queue``
    (the senders' side) and ``dead_letters``. Every call runs on the store's single thread."""

    def __init__(self, state_dir: str | os.PathLike[str], config: OutboxConfig | None = None) -> None:
        self._store = Store(state_dir, config or OutboxConfig())
        self.path = self._store.path
        self.config = self._store.config
        self.stats = self._store.stats
        self.writer = Writer(self._store)
        self.queue = DeliveryQueue(self._store)
        self.dead_letters = DeadLetters(self._store)
        self._lock: StateLock | None = None

    async def open(self, *, exclusive: bool = False) -> None:
        """``exclusive``: this process is the agent of the state directory (another one is refused); the
        command line's tools open the store beside a running agent without it."""
        if exclusive:
            self._lock = StateLock(self.path.parent)
            await asyncio.to_thread(self._lock.acquire)
        await self._store.open()
        self.writer.start()

    async def verify(self) -> None:
        """Notice a deleted state directory (or a replaced store file) and recreate the store from the open one,
        so nothing queued is lost: said in the log, in /status and, for a while, in /readyz."""
        happened = await self._store.call(self._store.verify_sync)
        if not happened:
            return
        if self._lock is not None:
            await asyncio.to_thread(self._lock.acquire)
        self.stats.store_recreated, self.stats.store_recreated_at = happened, time.time()
        log.error("outbox_store_recreated", detail=happened, queued=self.stats.depth)

    async def close(self) -> None:
        """Commit what the writer holds (what the store cannot take is given up), then close the file."""
        await self.writer.close()
        await self._store.close()
        if self._lock is not None:
            self._lock.release()

    async def checkpoints(self, source: str) -> dict[str, str]:
        """The positions a source resumes from (read once at its start)."""
        return await self._store.call(self._store.read_checkpoints_sync, source)

    async def alert_states(self) -> dict[str, str]:
        """The alert engine's open alerts (read once at the agent's start)."""
        return await self._store.call(self._store.read_alert_states_sync)
