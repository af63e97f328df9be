"""The running sources: start one from its committed checkpoints, stop one without losing what it read,
swap a source's rules in place."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from agent.alerts import AlertEngine
from agent.app.pipeline import QUEUE_BATCHES, Pipeline, PipelineStats, ProcessBudget, SourceRuntime
from agent.app.supervise import supervise
from agent.config import JournalSourceConfig, LogSourceConfig
from agent.journal import JournalSource
from agent.outbox import Commit, Outbox
from agent.source import Batch, Checkpoint, Source
from agent.tail import FileSource, InotifyHub

log = structlog.get_logger(__name__)

SEEN_MARKER = "__dutytail_source_seen__"  # checkpoint key recording that a source has started once
SourceConfig = LogSourceConfig | JournalSourceConfig


class SourceSet:
    def __init__(self, outbox: Outbox, engine: AlertEngine, inotify: InotifyHub,
                 tick: Callable[[float], asyncio.Future[None]], stats: PipelineStats,
                 rules_cache: str | None = None, rule_processes: int = 0) -> None:
        self.rules_cache = rules_cache
        self.process_budget = ProcessBudget(rule_processes)
        """Rule processes all sources' backlogs may use at once (``rule_processes``)."""
        """Where compiled rule databases are kept, so a restart with 1,000 rules is ready in well under a second."""
        self.outbox = outbox
        self.engine = engine
        self.inotify = inotify
        self._tick = tick
        self.stats = stats
        self.running: dict[str, SourceRuntime] = {}

    async def start(self, cfg: SourceConfig) -> None:
        stored = await self.outbox.checkpoints(cfg.name)
        # After a corrupt store was moved aside the agent has run before: `start_at: end` must not skip
        # what was written meanwhile, so read from the beginning (re-sending beats silently skipping).
        reset = bool(self.outbox.stats.store_reset)
        is_first_start = SEEN_MARKER not in stored and not reset
        if reset and SEEN_MARKER not in stored:
            log.warning("store_reset_reading_sources_from_beginning", source=cfg.name,
                        note="offsets were lost with the corrupt store; already-sent events may be sent again")
        checkpoints = {k: Checkpoint(k, v) for k, v in stored.items() if k != SEEN_MARKER}
        if SEEN_MARKER not in stored:
            await self.outbox.writer.commit(Commit(checkpoints=[(cfg.name, SEEN_MARKER, "{}")]))
        queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=QUEUE_BATCHES)
        source: Source
        if isinstance(cfg, JournalSourceConfig):
            source = JournalSource(cfg, checkpoints, is_first_start=is_first_start)
        else:
            source = FileSource(cfg, checkpoints, is_first_start=is_first_start, hub=self.inotify)
        # compiling thousands of rules takes seconds: never on the event loop
        ruleset = await asyncio.to_thread(cfg.compile_rules, cache_dir=self.rules_cache)
        runtime = SourceRuntime(cfg, ruleset, source, queue)
        pipeline = Pipeline(runtime, self.engine, self.outbox, self._tick, self.stats, self.process_budget)
        runtime.tasks = [
            asyncio.create_task(supervise(f"source:{cfg.name}", lambda: source.run(queue)), name=f"source-{cfg.name}"),
            asyncio.create_task(pipeline.run(), name=f"pipeline-{cfg.name}"),
        ]
        self.running[cfg.name] = runtime
        await self._watch_rules(cfg)
        log.info("source_started", source=cfg.name, kind=type(source).__name__, first_start=is_first_start,
                 matcher=ruleset.describe().get("engine"))

    async def stop(self, name: str) -> None:
        """Stop reading, then let the pipeline commit everything already read (nothing read is lost)."""
        runtime = self.running.pop(name, None)
        if runtime is None:
            return
        reader, pipeline = runtime.tasks
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        with contextlib.suppress(Exception):
            await runtime.source.close(runtime.queue)
        await runtime.queue.join()
        pipeline.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pipeline

    async def stop_all(self) -> None:
        for name in list(self.running):
            await self.stop(name)

    async def swap_rules(self, cfg: SourceConfig) -> None:
        """New rules for a running source: its offsets and queue stay as they are."""
        runtime = self.running[cfg.name]
        runtime.ruleset = await asyncio.to_thread(cfg.compile_rules, cache_dir=self.rules_cache)
        runtime.config = cfg
        await self._watch_rules(cfg)

    async def _watch_rules(self, cfg: SourceConfig) -> None:
        """Absence and expect rules start their clocks (or keep the stored ones) as the source starts."""
        events = self.engine.watch_rules(cfg.name, cfg.rules, time.time())
        await self.outbox.writer.commit(self.engine.commit(events))

    def first_scans_done(self) -> bool:
        return all(rt.source.first_scan_done for rt in self.running.values())

    async def wait_first_scans(self, timeout: float = 30.0) -> None:
        """READY=1 (systemd starts dependent units on it) and /readyz wait until every log source has opened
        its files: with `start_at: end`, a line written after that is delivered, never taken for history."""
        deadline = time.monotonic() + timeout
        while not self.first_scans_done():
            if time.monotonic() > deadline:
                log.warning("first_scan_slow_reporting_ready_anyway", timeout_s=timeout)
                return
            await asyncio.sleep(0.02)  # startup only: a few polls while the worker threads scan
