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

import os

from agent.outbox.config import OutboxConfig
from agent.outbox.dead_letters import DeadLetters
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
from agent.outbox.store import Store
from agent.outbox.writer import MAX_QUEUED_CHANGES, MAX_QUEUED_EVENTS, Writer

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

    async def open(self) -> None:
        await self._store.open()
        self.writer.start()

    async def close(self) -> None:
        """Commit what the writer holds (what the store cannot take is given up), then close the file."""
        await self.writer.close()
        await self._store.close()

    async def checkpoints(self, source: str) -> dict[str, str]:
        """The positions a source resumes from (read once at its start)."""
        return await self._store.call(self._store.read_checkpoints_sync, source)

    async def alert_states(self) -> dict[str, str]:
        """The alert engine's open alerts (read once at the agent's start)."""
        return await self._store.call(self._store.read_alert_states_sync)
