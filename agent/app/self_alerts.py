"""The agent's look at itself, every ``self_alerts.interval``: a snapshot of its own state to
``agent.selfwatch``, the observations to the alert engine, the events to the ordered writer.

Self alerts never recurse: each is one alert per condition and object, so a self alert that cannot be
delivered (the output it would go to is down, or rejects it) does not raise another one; it waits in the
outbox like every event, and ``/status`` lists the open ones (``self_alerts``) meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import structlog

from agent.alerts import AlertEngine
from agent.alerts.self_alert import SelfObservation
from agent.app.sources import SourceSet
from agent.config import Config, JournalSourceConfig
from agent.outbox import Outbox
from agent.selfwatch import AgentSnapshot, SelfWatch, SourceSnapshot

log = structlog.get_logger(__name__)


class SelfAlerts:
    def __init__(self, engine: AlertEngine, outbox: Outbox, sources: SourceSet, config: Callable[[], Config],
                 config_error: Callable[[], str], config_path: str | None) -> None:
        self.engine = engine
        self.outbox = outbox
        self.sources = sources
        self._config = config
        self._config_error = config_error
        self._config_path = os.path.abspath(config_path) if config_path else ""  # one key however it was named
        self.watch = SelfWatch(config().self_alerts)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._config().self_alerts.interval)
            try:
                await self.look(time.time())
            except (OSError, sqlite3.Error) as exc:  # a store that cannot answer now: next time
                log.warning("self_alerts_look_failed", error=str(exc))

    async def look(self, now: float) -> None:
        config = self._config()
        cfg = self.watch.config = config.self_alerts
        engine = self.engine
        if not cfg.enabled:
            found: list[SelfObservation] = []
            holding: set[tuple[str, str]] = set()
        else:
            found, holding = self.watch.look(await self._snapshot(config), now)
        output, events = cfg.output or config.flashduty[0].name, []
        for observation in found:
            events += engine.on_self(observation, output=output, severity=cfg.severity, now=now)
        settled = not cfg.enabled or self._settled(config)
        for state in engine.self_states():
            obj = state.fields.get("object", "")
            if (state.firing and settled and (state.resolve_after is None or not cfg.enabled)
                    and (state.name, obj) not in holding):
                cleared = state.fields.get("cleared") or "Resolved: the condition cleared"
                if not cfg.enabled:
                    cleared = "Resolved: self alerts were turned off in the dutytail config"
                events += engine.on_self(SelfObservation(state.name, obj, False, cleared=cleared),
                                         output=output, severity=cfg.severity, now=now)
        if events or engine.has_changes():
            await self.outbox.writer.commit(engine.commit(events))

    def _settled(self, config: Config) -> bool:
        """Every configured source runs and has scanned its files once: only then does a condition missing
        from the snapshot mean that it cleared, not that the agent is starting, stopping (sources stop
        before this task does) or restarting a source for a reload."""
        running = self.sources.running
        configured = {s.name for s in [*config.logs, *config.journal]}
        return configured <= running.keys() and all(rt.source.first_scan_done for rt in running.values())

    async def _snapshot(self, config: Config) -> AgentSnapshot:
        sources = []
        for name, runtime in list(self.sources.running.items()):
            journal = isinstance(runtime.config, JournalSourceConfig)
            backpressure = not journal and runtime.queue.full()
            summary = getattr(runtime.source, "summary", None)
            # a file source's summary: aggregates and the streams behind, no per-file list (100,000 files)
            status = summary() if summary is not None and not backpressure else runtime.source.status()
            if backpressure:
                status = _sizes_on_disk(status)
            sources.append(SourceSnapshot(name, journal, status, runtime.source.stats.losses(),
                                          runtime.ruleset.abandoned()))
        return AgentSnapshot(host=config.host, sources=sources, dead_letters=await self.outbox.dead_letters.count(),
                             dropped=dict(self.outbox.stats.dropped), config_error=self._config_error(),
                             config_path=self._config_path)


def _sizes_on_disk(status: dict[str, Any]) -> dict[str, Any]:
    """A source held back by backpressure (its queue full: the outbox or the engine is not taking more) does
    not look at its files, so the sizes in its status are the last it saw. Take them from the disk, so the
    lag shows what is really unread (a path now naming a newer file only overstates it). Only the files the
    status lists are stat()ed (a file source lists at most 1,000, the lagging ones first), and the streams
    behind."""

    def on_disk(f: dict[str, Any]) -> dict[str, Any]:
        with contextlib.suppress(OSError):
            size = os.stat(f["path"]).st_size
            if size > int(f.get("size") or 0):
                return {**f, "size": size, "lag_bytes": max(0, size - int(f.get("offset") or 0))}
        return f

    files = [on_disk(f) if f.get("state") != "error" else f for f in status.get("files", [])]
    out = {**status, "files": files}
    if "behind" in status:
        behind = {(b.get("key") or b["path"]): on_disk(b) for b in status["behind"]}
        for f in files:
            key = f.get("key") or f["path"]
            if f.get("state") != "error" and int(f.get("size") or 0) > int(f.get("offset") or 0):
                behind.setdefault(key, {"key": f.get("key"), "path": f["path"], "offset": f.get("offset"),
                                        "size": f.get("size")})
        out["behind"] = list(behind.values())
    return out
