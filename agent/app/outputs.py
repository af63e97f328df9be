"""The Flashduty outputs: one sender per output, each supervised, started and stopped by name."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, TextIO

from agent.app.supervise import supervise
from agent.lazy import ensure_loaded
from agent.logsetup import Redactor
from agent.outbox import Outbox
from agent.sender import OutputConfig, OutputSender


class Outputs:
    def __init__(self, outbox: Outbox, *, metrics: Any, redactor: Redactor, stdout: TextIO | None) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.redactor = redactor
        self.stdout = stdout
        self.senders: dict[str, OutputSender] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._client_import: asyncio.Task[None] | None = None

    def prepare(self) -> None:
        """Once the agent is ready: import the HTTP client (aiohttp, ~0.2 s of CPU and ~8 MiB) in a worker
        thread when some output sends for real. Imported at the first event instead, it slowed the reading of
        the very burst that produced that event by a fifth (bench/growth.py's scan) and delayed the first
        alert; a dry run never imports it."""
        if self._client_import is None and any(not s.config.dry_run() for s in self.senders.values()):
            self._client_import = asyncio.create_task(ensure_loaded("aiohttp"), name="http-client-import")
            # a failure surfaces (and is logged) where the client is used: the first send awaits the same import
            self._client_import.add_done_callback(lambda t: t.cancelled() or t.exception())

    def start(self, config: OutputConfig) -> None:
        sender = OutputSender(config, self.outbox, stdout=self.stdout, metrics=self.metrics, redactor=self.redactor)
        self.senders[config.name] = sender
        self.tasks[config.name] = asyncio.create_task(supervise(f"sender:{config.name}", sender.run),
                                                      name=f"sender-{config.name}")

    async def stop(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        sender = self.senders.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if sender is not None:
            await sender.close()

    async def drain_and_stop(self, timeout: float) -> None:
        """Send what can be sent within ``timeout`` (the rest stays on disk), then stop every sender."""
        deadline = time.monotonic() + timeout
        for sender in self.senders.values():
            await sender.drain(max(0.0, deadline - time.monotonic()))
        for name in list(self.senders):
            await self.stop(name)
        if self._client_import is not None and not self._client_import.done():
            self._client_import.cancel()  # the import itself finishes in its thread
            with contextlib.suppress(asyncio.CancelledError):
                await self._client_import

    def refresh_urls(self) -> None:
        """A rotated ``push_url_file`` counts even when the config text is the same."""
        for sender in self.senders.values():
            sender.refresh_url()

    def not_running(self) -> list[str]:
        return [name for name, task in self.tasks.items() if task.done()]

    def last_success(self) -> float | None:
        return max((s.stats.last_success or 0 for s in self.senders.values()), default=0) or None

    def dry_run(self) -> bool:
        return all(s.dry_run for s in self.senders.values())
