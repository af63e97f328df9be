"""One source's pipeline: batches in file order -> rules (worker threads or processes) -> alert engine -> the
ordered writer.

Data flows one way and every stage is bounded: the source's queue (``QUEUE_BATCHES``), batches matched ahead
(``MATCH_AHEAD``), the writer's backpressure, and the alert engine's capacity (a crowded engine pauses the
source until due resolves free room; its lines wait in the file, nothing is lost).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from agent.alerts import AlertEngine, hit_events
from agent.config import JournalSourceConfig, LogSourceConfig
from agent.lines import LineChunk
from agent.outbox import Commit, Outbox, QueuedEvent
from agent.rules import Hits, RuleSet
from agent.source import Batch, Source

if TYPE_CHECKING:  # imported when a backlog first needs it: multiprocessing costs an idle agent ~2 MiB
    from agent.rules.processes import RuleProcesses

log = structlog.get_logger(__name__)

QUEUE_BATCHES = 8  # bounded queue between a source and its pipeline: backpressure, bounded memory
MATCH_AHEAD = 3  # batches of one source matched concurrently, ahead of the alert engine
HITS_PER_ROOM_CHECK = 1000  # matches fed to the alert engine between checks for alert capacity
ALERT_ROOM_WAIT = 5.0  # a crowded engine pauses a source only for resolves due within this many seconds
INLINE_MATCH_BYTES = 8 * 1024  # batches up to this size are matched on the event loop (well under 0.1 ms)
INLINE_MATCH_LINES = 64
PROCESS_MIN_BYTES = 256 * 1024  # a batch this big is a backlog (a live tail hands on a few lines at a time)
PROCESS_IDLE_SECONDS = 30.0  # a source's rule processes stop after this long without a backlog batch
PROCESS_RETRY_SECONDS = 60.0  # after processes failed, threads only for this long


class ProcessBudget:
    """Rule processes the whole agent may run (``rule_processes``), shared by its sources' backlogs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.in_use = 0

    @property
    def available(self) -> int:
        return max(self.total - self.in_use, 0)

    def take(self) -> int:
        n = self.available
        self.in_use += n
        return n

    def give(self, n: int) -> None:
        self.in_use -= n


@dataclass
class SourceRuntime:
    """A running source: its config, compiled rules, queue and tasks."""

    config: LogSourceConfig | JournalSourceConfig
    ruleset: RuleSet
    source: Source
    queue: asyncio.Queue[Batch]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    batches: int = 0
    matching: int = 0
    """Batches taken off the queue whose hits the alert engine has not had yet (a line read, not yet seen)."""
    processes: RuleProcesses | None = None
    """Worker processes matching this source's backlog, while it has one (agent/rules/processes.py)."""

    @property
    def busy(self) -> bool:
        """Read lines are still on their way to the alert engine."""
        return self.matching > 0 or not self.queue.empty()


@dataclass
class PipelineStats:
    """What the pipelines decided on their own (exported with the agent's metrics)."""

    dropped_lines: dict[str, int] = field(default_factory=dict)  # reason -> lines
    paused_seconds: dict[str, float] = field(default_factory=dict)  # source -> seconds waiting for alert room
    parse_errors: dict[tuple[str, str], int] = field(default_factory=dict)  # (source, format) -> lines
    process_batches: dict[str, int] = field(default_factory=dict)  # source -> batches matched in rule processes
    process_failures: dict[str, int] = field(default_factory=dict)  # source -> of those, evaluated again in a thread
    room_logged: float = 0.0


class Pipeline:
    def __init__(self, runtime: SourceRuntime, engine: AlertEngine, outbox: Outbox,
                 tick: Callable[[float], asyncio.Future[None]], stats: PipelineStats,
                 budget: ProcessBudget | None = None) -> None:
        self.runtime = runtime
        self.engine = engine
        self.outbox = outbox
        self.tick = tick
        self.stats = stats
        self.budget = budget or ProcessBudget(0)
        self._no_processes_until = 0.0
        self._processes_used = 0.0

    async def run(self) -> None:
        """Evaluate batches in order and hand their changes to the outbox's one ordered writer, so matching
        batch N+1 overlaps the commit of batch N; ``queue.join()`` returns only once every batch is committed.

        Up to MATCH_AHEAD queued batches are matched at once in worker threads (rules are stateless, and
        hyperscan releases the GIL, so a backlog scans on both cores) while the alert engine still takes
        their hits strictly in order. Without it each batch waited for the event loop twice (hand-off to the
        worker, result back) behind whatever the sender was doing, one batch at a time. With rule processes
        (a structured backlog) as many batches as they have slots are in flight."""
        queue = self.runtime.queue
        ahead: collections.deque[tuple[Batch, asyncio.Future[Hits]]] = collections.deque()
        try:
            while True:
                if not ahead:
                    batch = await self._next(queue)
                    ahead.append((batch, self._match(batch)))
                processes = self.runtime.processes
                limit = max(MATCH_AHEAD, processes.slots) if processes is not None else MATCH_AHEAD
                while len(ahead) < limit and not queue.empty():
                    batch = queue.get_nowait()
                    ahead.append((batch, self._match(batch)))
                self.runtime.matching = len(ahead)
                batch, matching = ahead.popleft()
                try:
                    await self._process(batch, matching)
                finally:
                    self.runtime.matching = len(ahead)
        finally:
            for _, matching in ahead:
                matching.cancel()
            self._stop_processes()

    async def _next(self, queue: asyncio.Queue[Batch]) -> Batch:
        """The next batch; rule processes that had nothing to do for PROCESS_IDLE_SECONDS are stopped (their
        memory returned) while waiting. Without processes this waits without a timer."""
        if self.runtime.processes is not None:
            idle = time.monotonic() - self._processes_used
            try:
                return await asyncio.wait_for(queue.get(), max(0.0, PROCESS_IDLE_SECONDS - idle))
            except TimeoutError:
                self._stop_processes()
        return await queue.get()

    def _stop_processes(self) -> None:
        processes, self.runtime.processes = self.runtime.processes, None
        if processes is not None:
            name = self.runtime.config.name
            processes.close()
            self.budget.give(processes.processes)
            if processes.broken:
                self._no_processes_until = time.monotonic() + PROCESS_RETRY_SECONDS
            log.info("rule_processes_stopped", source=name, batches=processes.batches, failures=processes.failures)

    def _in_process(self, batch: Batch) -> asyncio.Future[Hits] | None:
        """A structured backlog batch goes to the source's rule processes (started on the first one, while
        the agent's budget allows) when one has a free slot; otherwise None (a thread takes it)."""
        runtime, lines = self.runtime, batch.lines
        processes, now = runtime.processes, time.monotonic()
        if not (isinstance(lines, LineChunk) and len(lines.data) >= PROCESS_MIN_BYTES and runtime.ruleset.offloadable):
            if processes is not None and now - self._processes_used > PROCESS_IDLE_SECONDS:
                self._stop_processes()  # the backlog is over: a live tail's small batches need no processes
            return None
        if processes is not None and (processes.ruleset is not runtime.ruleset or processes.broken):
            self._stop_processes()  # new rules since (a reload), or failed: the next batch may start new ones
            processes = None
        if processes is None:
            if now < self._no_processes_until or not self.budget.available:
                return None
            from agent.rules.processes import RuleProcesses

            n = self.budget.take()
            failures, name = self.stats.process_failures, runtime.config.name
            try:
                processes = RuleProcesses(runtime.ruleset, processes=n, slots=2 * n + 1,
                                          slot_bytes=2 * len(lines.data) + 65536,
                                          on_failure=lambda: failures.__setitem__(name, failures.get(name, 0) + 1))
            except Exception as exc:  # e.g. no memfd_create under a seccomp filter: threads it is
                self.budget.give(n)
                self._no_processes_until = now + PROCESS_RETRY_SECONDS
                log.warning("rule_processes_failed_to_start", source=name, error=repr(exc),
                            note="this source's rules run in threads of the agent process instead; nothing is lost")
                return None
            runtime.processes = processes
            log.info("rule_processes_starting", source=name, processes=n,
                     note="a backlog of structured lines is matched on every core")
        self._processes_used = now
        matching = processes.evaluate(lines, batch.path)
        if matching is not None:
            counts = self.stats.process_batches
            counts[runtime.config.name] = counts.get(runtime.config.name, 0) + 1
        return matching

    def _match(self, batch: Batch) -> asyncio.Future[Hits]:
        ruleset = self.runtime.ruleset
        if not batch.lines or not ruleset.rules:
            done: asyncio.Future[Hits] = asyncio.get_running_loop().create_future()
            done.set_result(Hits())
            return done
        if ruleset.quick and _small(batch):
            # A few lines (what a live tail mostly hands on) of a quick rule set: matching them takes
            # microseconds, a round trip through a worker thread ~50 us and two thread wake-ups; at 1,000
            # batches/s that was most of the agent's CPU. Evaluated here, on the loop; an error still fails
            # only this batch. A structured or guarded rule set always goes to a thread (RuleSet.quick).
            inline: asyncio.Future[Hits] = asyncio.get_running_loop().create_future()
            try:
                inline.set_result(ruleset.evaluate(batch.lines, batch.data, batch.fields, batch.path))
            except Exception as exc:
                inline.set_exception(exc)
            return inline
        return self._in_process(batch) or asyncio.ensure_future(
            asyncio.to_thread(ruleset.evaluate, batch.lines, batch.data, batch.fields, batch.path))

    async def _process(self, batch: Batch, matching: asyncio.Future[Hits]) -> None:
        runtime = self.runtime
        try:
            hits = await matching
            if hits.parse_errors:
                self._count_parse_errors(hits.parse_errors)
            change = await self._evaluate(batch, hits)
        except Exception as exc:
            # A bug in one batch must not stop the source. Its checkpoint is not committed, so a restart
            # re-reads it; until then its lines are skipped, and that is counted as a drop.
            dropped = self.stats.dropped_lines
            dropped["pipeline_error_lines"] = dropped.get("pipeline_error_lines", 0) + len(batch.lines)
            log.exception("pipeline_batch_failed", source=runtime.config.name, path=batch.path,
                          lines=len(batch.lines), error=str(exc))
            runtime.queue.task_done()
            return

        def committed() -> None:
            runtime.batches += 1
            runtime.queue.task_done()

        self.outbox.writer.submit(change, on_done=committed)
        await self.outbox.writer.backpressure()

    def _count_parse_errors(self, errors: dict[str, int]) -> None:
        counts, name = self.stats.parse_errors, self.runtime.config.name
        for fmt, n in errors.items():
            if (name, fmt) not in counts:
                log.warning("lines_not_parsed", source=name, format=fmt,
                            note="such lines are matched as plain text; counted in dutytail_parse_errors_total")
            counts[(name, fmt)] = counts.get((name, fmt), 0) + n

    async def _evaluate(self, batch: Batch, hits: Hits) -> Commit:
        name = self.runtime.config.name
        engine = self.engine
        events: list[QueuedEvent] = []
        # small enough steps that a crowded (half full) engine cannot overflow within one step
        step = max(1, min(HITS_PER_ROOM_CHECK, engine.config.max_open_alerts // 4))
        for start in range(0, len(hits), step):
            if engine.crowded():
                # Commit what this batch produced so far (in engine order, without the checkpoint: a crash
                # re-reads the batch), then let due resolves free room before opening more alerts.
                self.outbox.writer.submit(engine.commit(events))
                events = []
                await self.outbox.writer.backpressure()
                await self._wait_for_alert_room()
            events += hit_events(engine, name, self.runtime.ruleset.rules, batch.path, hits[start:start + step],
                                 time.time())
        change = engine.commit(events)
        if batch.checkpoint is not None:
            if batch.finished:
                change.forget_checkpoints.append((name, batch.checkpoint.key))
            else:
                change.checkpoints.append((name, batch.checkpoint.key, batch.checkpoint.state))
        return change

    async def _wait_for_alert_room(self) -> None:
        """A backlog read at full speed opens alerts faster than their quiet periods end. While some of them
        resolve within ALERT_ROOM_WAIT, pause the source and resolve them early instead of growing memory
        without bound. Otherwise carry on: past ``max_open_alerts`` the engine suppresses new identities,
        counted and summarised."""
        engine, source = self.engine, self.runtime.config.name
        paused = time.monotonic()
        while engine.crowded():
            now = time.time()
            due = engine.next_quiet_resolve()
            if due is None or due - now > ALERT_ROOM_WAIT:
                break
            await asyncio.sleep(max(0.1, due - now))
            # not awaited (the writer keeps engine order); a failure is the ticker's to report
            self.tick(time.time()).add_done_callback(lambda f: f.cancelled() or f.exception())
        waited = time.monotonic() - paused
        self.stats.paused_seconds[source] = self.stats.paused_seconds.get(source, 0.0) + waited
        if waited >= 0.1 and time.monotonic() - self.stats.room_logged >= 60:
            self.stats.room_logged = time.monotonic()
            log.info("source_paused_until_alerts_resolve", source=source, waited_s=round(waited, 2),
                     open_alerts=len(engine.states), max_open_alerts=engine.config.max_open_alerts)


def _small(batch: Batch) -> bool:
    lines = batch.lines
    if len(lines) > INLINE_MATCH_LINES:
        return False
    if batch.data is not None:
        return len(batch.data) <= INLINE_MATCH_BYTES
    return sum(map(len, lines)) <= INLINE_MATCH_BYTES
