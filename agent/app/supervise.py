"""Keep a stage running: a crash is logged and the stage restarted with backoff, never the agent taken down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)


async def supervise(what: str, factory: Callable[[], Awaitable[None]]) -> None:
    """Run ``factory()`` until it returns; after an exception start it again, waiting 1 s doubling to 60 s
    (back to 1 s once a run lasted a minute)."""
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("stage_crashed_restarting", stage=what, error=str(exc), restart_in=delay)
        if time.monotonic() - started > 60:
            delay = 1.0
        await asyncio.sleep(delay)
        delay = min(delay * 2, 60.0)
