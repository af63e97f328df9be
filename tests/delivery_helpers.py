"""Helpers for the outbox and sender tests: events, an open outbox, a running sender."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from agent.outbox import Outbox, OutboxConfig, QueuedEvent
from agent.sender import OutputConfig, OutputSender
from tests.fake_flashduty import FakeFlashduty


def event(key: str, n: int, status: str = "Critical", output: str = "default") -> QueuedEvent:
    """An event of ``key`` numbered ``n`` (in its labels, so tests can check order)."""
    return QueuedEvent(output=output, alert_key=key,
                       body={"title_rule": f"t{n}", "event_status": status, "alert_key": key,
                             "labels": {"n": str(n)}})


@contextlib.asynccontextmanager
async def open_outbox(state_dir: Path, config: OutboxConfig | None = None) -> AsyncIterator[Outbox]:
    box = Outbox(state_dir, config or OutboxConfig())
    await box.open()
    try:
        yield box
    finally:
        await box.close()


@contextlib.asynccontextmanager
async def running(*senders: OutputSender) -> AsyncIterator[None]:
    """Run senders until the block ends, then stop and close them."""
    tasks = [asyncio.create_task(s.run()) for s in senders]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for s in senders:
            await s.close()


def output(fake: FakeFlashduty, **kw: object) -> OutputConfig:
    """An output to ``fake`` with short retries."""
    return OutputConfig(push_url=fake.url, retry_initial=0.02, retry_max=0.2, **kw)
