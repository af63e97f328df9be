"""Uncertain deliveries: an attempt that timed out or was cut off after sending may still be processed
by the server later, after newer events of its key. Once the key is quiet and that attempt could have
landed, the key's latest delivered event is queued again (identical events are discarded server-side),
so Flashduty's last word on the key is the newest state.

The re-send is a ``Reassert`` step of the outbox's ordered writer: the check that no event of the key is
queued and the insert are one transaction, and the body is the key's latest delivered one at the moment
the step is handed to the store thread (why that can never re-send an older state: ``Writer._hand_off``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from agent.outbox import Outbox, OutboxFull, Reassert

log = structlog.get_logger(__name__)


class UncertainDeliveries:
    """Per output: the keys with an uncertain attempt, and one re-send task per such key."""

    SETTLE_MARGIN = 5.0  # seconds past 2 x the request timeout after which an abandoned attempt has landed
    RECHECK = 1.0  # seconds between checks while the key is busy

    def __init__(self, outbox: Outbox, output: str, timeout: float, busy: Callable[[str], bool]) -> None:
        self._outbox = outbox
        self._output = output
        self._timeout = timeout
        self._busy = busy  # the key has an event in flight or waiting in the sender's window
        self._until: dict[str, float] = {}
        self._latest_body: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def attempt_uncertain(self, key: str, now: float) -> None:
        settle = now + 2 * self._timeout + self.SETTLE_MARGIN
        self._until[key] = max(settle, self._until.get(key, 0.0))

    def delivered(self, key: str, body: str) -> None:
        """An event of ``key`` was accepted: if the key is uncertain, it is the one to re-send. Called on the
        loop as the answer arrives, before the delete of its row is handed to the store (``_hand_off``
        relies on that order)."""
        if key not in self._until:
            return
        self._latest_body[key] = body
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._reassert(key))

    def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    async def _reassert(self, key: str) -> None:
        """Queue the key's latest delivered event again once an abandoned attempt can no longer overtake it."""
        while True:
            until = self._until.get(key, 0.0)
            if until - time.time() > 0:
                await asyncio.sleep(until - time.time())
                continue
            if self._busy(key):  # cheap, in memory; the store's check in the step is the one that counts
                await asyncio.sleep(self.RECHECK)
                continue
            step = Reassert(self._output, key, lambda: self._latest_body.get(key))
            try:
                await self._outbox.writer.submit(step)
            except OutboxFull:  # shutting down with a store that cannot write: nothing more to do here
                return
            if step.body is not None and not step.queued:  # an event of the key is queued: check again later
                await asyncio.sleep(self.RECHECK)
                continue
            if self._until.get(key) != until:  # another attempt became uncertain meanwhile: wait for it too
                continue
            self._until.pop(key, None)
            self._latest_body.pop(key, None)
            if step.queued:
                log.info("event_resent_after_uncertain_delivery", output=self._output, alert_key=key)
            return
