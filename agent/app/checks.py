"""Local checks wired to the alert engine: each observation becomes events committed through the writer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from agent.alerts import AlertEngine
from agent.app.supervise import supervise
from agent.checks import CheckConfig, CheckObservation, CheckScheduler
from agent.logsetup import Redactor
from agent.outbox import Outbox


class CheckRunner:
    def __init__(self, engine: AlertEngine, outbox: Outbox, redactor: Redactor) -> None:
        self.engine = engine
        self.outbox = outbox
        self.redactor = redactor
        self.scheduler: CheckScheduler | None = None
        self.task: asyncio.Task[None] | None = None
        self.runs: dict[tuple[str, str], int] = {}  # (check, raw status) -> runs

    def start(self, checks: list[CheckConfig]) -> None:
        if not checks:
            self.scheduler = None
            return
        by_name = {c.name: c for c in checks}
        # checks firing before a restart resume from that status (no repeated Critical, an Ok when it clears)
        initial = {s.name: s.severity for s in self.engine.states.values() if s.kind == "check" and s.firing}

        async def observe(observation: CheckObservation) -> None:
            check = by_name.get(observation.check)
            if check is None:
                return
            run_key = (observation.check, observation.result.status)
            self.runs[run_key] = self.runs.get(run_key, 0) + 1
            events = self.engine.on_check(check, observation, time.time())
            await self.outbox.writer.commit(self.engine.commit(events))

        self.scheduler = scheduler = CheckScheduler(checks, observe, initial_status=initial, redactor=self.redactor)
        self.task = asyncio.create_task(supervise("checks", scheduler.run), name="checks")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self.task = None
        self.scheduler = None

    def status(self) -> dict[str, Any]:
        return self.scheduler.status() if self.scheduler is not None else {}
