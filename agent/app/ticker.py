"""The alert engine's clock: once a second quiet-period resolves, reminders and the storm summary; once a
minute events past the outbox's ``max_age`` expire."""

from __future__ import annotations

import asyncio
import time

from agent.alerts import AlertEngine
from agent.outbox import Outbox, OutboxFull


class AlertTicker:
    def __init__(self, engine: AlertEngine, outbox: Outbox) -> None:
        self.engine = engine
        self.outbox = outbox

    def tick(self, now: float) -> asyncio.Future[None]:
        """What is due at ``now``, handed to the ordered writer in engine order; the future completes when it
        is durable. Synchronous up to the hand-off, so nothing the engine produces later gets a lower id."""
        return self.outbox.writer.submit(self.engine.commit(self.engine.tick(now)))

    async def run(self) -> None:
        last_expire = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            try:
                await self.tick(now)
            except OutboxFull:
                return  # shutting down with a store that cannot write: nothing more to do here
            if now - last_expire >= 60:
                last_expire = now
                await self.outbox.queue.expire(now)
