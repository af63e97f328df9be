"""The alert engine's clock: once a second quiet-period resolves, reminders and the storm summary; every few
seconds a look that the store file is still there; once a minute events past the outbox's ``max_age`` expire."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import structlog

from agent.alerts import AlertEngine
from agent.outbox import Outbox, OutboxFull

log = structlog.get_logger(__name__)

VERIFY_EVERY = 5.0  # seconds between looks that the store file is still at its path (state_dir deleted?)


class AlertTicker:
    def __init__(self, engine: AlertEngine, outbox: Outbox) -> None:
        self.engine = engine
        self.outbox = outbox

    def tick(self, now: float) -> asyncio.Future[None]:
        """What is due at ``now``, handed to the ordered writer in engine order; the future completes when it
        is durable. Synchronous up to the hand-off, so nothing the engine produces later gets a lower id."""
        return self.outbox.writer.submit(self.engine.commit(self.engine.tick(now)))

    async def run(self) -> None:
        last_expire = last_verify = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            try:
                await self.tick(now)
            except OutboxFull:
                return  # shutting down with a store that cannot write: nothing more to do here
            if now - last_verify >= VERIFY_EVERY:
                last_verify = now
                try:
                    await self.outbox.verify()
                except (OSError, sqlite3.Error) as exc:
                    log.error("outbox_store_lost_cannot_recreate", error=str(exc))
            if now - last_expire >= 60:
                last_expire = now
                await self.outbox.queue.expire(now)
