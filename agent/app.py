"""The agent: wires the stages together, supervises their tasks, reloads the config.

Data flows one way: sources put batches on bounded queues -> a pipeline task per source evaluates rules
(in a worker thread) and feeds the alert engine -> one outbox commit holds the events, the source
checkpoint and the alert state -> senders deliver from the outbox. A stage never calls back upstream;
backpressure is the bounded queue and the awaited commit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import structlog

from agent import __version__
from agent.alerts import AlertEngine, hit_events
from agent.checks import CheckObservation, CheckScheduler
from agent.config import Config, ConfigError, JournalSourceConfig, LogSourceConfig, load_config, secret_warnings
from agent.health import HealthServer
from agent.journal import JournalSource
from agent.logsetup import REDACTOR
from agent.metrics import Metrics
from agent.outbox import Commit, Outbox, OutboxFull, QueuedEvent
from agent.rules import Hit, RuleSet
from agent.sdnotify import SystemdNotifier, watchdog_loop
from agent.sender import OutputSender
from agent.source import Batch, Checkpoint, Source
from agent.tail import FileSource, InotifyHub

log = structlog.get_logger(__name__)


SEEN_MARKER = "__dutytail_source_seen__"  # checkpoint key recording that a source has started once
QUEUE_BATCHES = 8  # bounded queue between a source and its pipeline: backpressure, bounded memory
MATCH_AHEAD = 3  # batches of one source matched concurrently, ahead of the alert engine (see _pipeline)
HITS_PER_ROOM_CHECK = 1000  # matches fed to the alert engine between checks for alert capacity
ALERT_ROOM_WAIT = 5.0  # a crowded engine pauses a source only for resolves due within this many seconds


def release_freed_memory() -> None:
    """Hand memory freed during startup or a reload (hyperscan's compiler, config parsing) back to the OS:
    glibc keeps it mapped otherwise, ~3 MiB of an idle agent's RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc; elsewhere there is nothing to trim


@dataclass
class SourceRuntime:
    """A running source: its config, compiled rules, queue and tasks."""

    config: LogSourceConfig | JournalSourceConfig
    ruleset: RuleSet
    source: Source
    queue: asyncio.Queue[Batch]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    batches: int = 0


class Agent:
    """One running dutytail. ``await Agent(config).run(stop_event)``; ``reload()`` swaps in a new config."""

    def __init__(self, config: Config, config_path: str | None = None, *, stdout: TextIO | None = None,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.stdout = stdout
        self.notifier = notifier or SystemdNotifier()
        self.metrics = Metrics()
        self.started = time.time()
        self.ready = False
        self.config_error = ""
        self.last_reload: float | None = None
        self.outbox = Outbox(config.state_dir, config.outbox)
        self.engine = AlertEngine(config.alerts, host=config.host, global_labels=config.labels,
                                  default_output=config.flashduty[0].name)
        self.sources: dict[str, SourceRuntime] = {}
        self.senders: dict[str, OutputSender] = {}
        self.sender_tasks: dict[str, asyncio.Task[None]] = {}
        self.checks: CheckScheduler | None = None
        self.checks_task: asyncio.Task[None] | None = None
        self.health: HealthServer | None = None
        self.inotify = InotifyHub()  # one inotify observer for every file source
        self._background: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self.check_runs: dict[tuple[str, str], int] = {}
        self.source_paused_seconds: dict[str, float] = {}  # waiting for open alerts to resolve
        self._room_logged = 0.0
        REDACTOR.add(config.secrets())

    # --- lifecycle -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, serve until ``stop`` is set, then shut down gracefully."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def start(self) -> None:
        for warning in secret_warnings(self.config, self.config_path):
            log.warning("secret_file_world_readable", detail=warning)
        await asyncio.to_thread(Path(self.config.state_dir).mkdir, parents=True, exist_ok=True)
        await self.outbox.open()
        self.engine.restore(await self.outbox.alert_states())
        await self.outbox.writer.commit(Commit(events=self.engine.resolve_removed(self._alive_rules(), time.time())))
        for output in self.config.flashduty:
            self._start_sender(output.name)
        for source_config in [*self.config.logs, *self.config.journal]:
            await self._start_source(source_config)
        self._start_checks()
        self._background.append(asyncio.create_task(self._ticker(), name="alert-ticker"))
        if self.config.health.enabled:
            self.health = HealthServer(self.config.health, summary=self.summary, ready=self.readiness,
                                       status=self.status, metrics=self.metrics.render)
            self.metrics.attach(self.metrics_snapshot)
            await self.health.start()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._background.append(asyncio.create_task(watchdog_loop(self.notifier, interval), name="watchdog"))
        if self.config_path:
            self._background.append(asyncio.create_task(self._watch_config(), name="config-watch"))
        await self._first_scans()
        self.ready = True
        release_freed_memory()
        self.notifier.ready(status=f"dutytail {__version__}: {len(self.sources)} sources, "
                                   f"{len(self.config.checks)} checks")
        log.info("agent_ready", version=__version__, sources=list(self.sources), checks=len(self.config.checks),
                 outputs=[s.status()["url"] for s in self.senders.values()], state_dir=self.config.state_dir)

    async def _first_scans(self, timeout: float = 30.0) -> None:
        """READY=1 (systemd starts dependent units on it) and /readyz wait until every log source has opened
        its files: with `start_at: end`, a line written after that is delivered, never taken for history."""
        deadline = time.monotonic() + timeout
        while any(not self._first_scan_done(rt) for rt in self.sources.values()):
            if time.monotonic() > deadline:
                log.warning("first_scan_slow_reporting_ready_anyway", timeout_s=timeout)
                return
            await asyncio.sleep(0.02)  # startup only: a few polls while the worker thread scans

    @staticmethod
    def _first_scan_done(runtime: SourceRuntime) -> bool:
        return runtime.source.first_scan_done

    async def shutdown(self) -> None:
        """Stop sources, commit what they read, flush what can be sent in time, keep the rest on disk."""
        self.notifier.stopping()
        self.outbox.writer.begin_shutdown()  # failing commits stop retrying
        self.ready = False
        log.info("agent_stopping")
        for name in list(self.sources):
            await self._stop_source(name)
        if self.checks_task is not None:
            self.checks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.checks_task
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        deadline = time.monotonic() + self.config.shutdown_timeout
        for sender in self.senders.values():
            await sender.drain(max(0.0, deadline - time.monotonic()))
        for name in list(self.senders):
            await self._stop_sender(name)
        if self.health is not None:
            await self.health.stop()
        await asyncio.to_thread(self.inotify.stop)
        await self.outbox.close()  # commits what is still queued (checks, reload) first
        log.info("agent_stopped", queued=self.outbox.stats.depth)

    # --- sources and pipelines --------------------------------------------------------------------------

    async def _start_source(self, cfg: LogSourceConfig | JournalSourceConfig) -> None:
        stored = await self.outbox.checkpoints(cfg.name)
        # After a corrupt store was moved aside the agent has run before: `start_at: end` must not skip
        # what was written meanwhile, so read from the beginning (re-sending beats silently skipping).
        is_first_start = SEEN_MARKER not in stored and not self.outbox.stats.store_reset
        if self.outbox.stats.store_reset and SEEN_MARKER not in stored:
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
        runtime = SourceRuntime(cfg, RuleSet(cfg.rules), source, queue)
        runtime.tasks = [
            asyncio.create_task(self._supervise(f"source:{cfg.name}", lambda: source.run(queue)),
                                name=f"source-{cfg.name}"),
            asyncio.create_task(self._pipeline(runtime), name=f"pipeline-{cfg.name}"),
        ]
        self.sources[cfg.name] = runtime
        log.info("source_started", source=cfg.name, kind=type(source).__name__, first_start=is_first_start,
                 matcher=runtime.ruleset.describe().get("engine"))

    async def _stop_source(self, name: str) -> None:
        """Stop reading, then let the pipeline commit everything already read (nothing read is lost)."""
        runtime = self.sources.pop(name, None)
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

    async def _supervise(self, what: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Restart a crashed stage with backoff instead of taking the agent down with it."""
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

    async def _pipeline(self, runtime: SourceRuntime) -> None:
        """Evaluate batches in order and hand their changes to the outbox's one ordered writer, so
        matching batch N+1 overlaps the commit of batch N. ``runtime.queue.join()`` returns only once every
        batch is committed.

        Up to MATCH_AHEAD queued batches are matched at once in worker threads (rules are stateless, and
        hyperscan releases the GIL, so a backlog scans on both cores) while the alert engine still takes
        their hits strictly in order. Without it each batch waited for the event loop twice (hand-off to
        the worker, result back) behind whatever the sender was doing, one batch at a time."""
        name = runtime.config.name
        ahead: collections.deque[tuple[Batch, asyncio.Future[list[Hit]]]] = collections.deque()
        try:
            while True:
                if not ahead:
                    batch = await runtime.queue.get()
                    ahead.append((batch, self._match(runtime, batch)))
                while len(ahead) < MATCH_AHEAD and not runtime.queue.empty():
                    batch = runtime.queue.get_nowait()
                    ahead.append((batch, self._match(runtime, batch)))
                batch, matching = ahead.popleft()
                await self._process_batch(name, runtime, batch, matching)
        finally:
            for _, matching in ahead:
                matching.cancel()

    @staticmethod
    def _match(runtime: SourceRuntime, batch: Batch) -> asyncio.Future[list[Hit]]:
        if not batch.lines or runtime.ruleset.matcher is None:
            done: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
            done.set_result([])
            return done
        return asyncio.ensure_future(
            asyncio.to_thread(runtime.ruleset.evaluate, batch.lines, batch.data, batch.fields))

    async def _process_batch(self, name: str, runtime: SourceRuntime, batch: Batch,
                             matching: asyncio.Future[list[Hit]]) -> None:
        try:
            change = await self._evaluate(name, runtime, batch, await matching)
        except Exception as exc:
            # A bug in one batch must not stop the source. Its checkpoint is not committed, so a
            # restart re-reads it; until then its lines are skipped, and that is counted as a drop.
            dropped = self.outbox.stats.dropped
            dropped["pipeline_error_lines"] = dropped.get("pipeline_error_lines", 0) + len(batch.lines)
            log.exception("pipeline_batch_failed", source=name, path=batch.path, lines=len(batch.lines),
                          error=str(exc))
            runtime.queue.task_done()
            return

        def committed(runtime: SourceRuntime = runtime) -> None:
            runtime.batches += 1
            runtime.queue.task_done()

        self.outbox.writer.submit(change, on_done=committed)
        await self.outbox.writer.backpressure()

    async def _evaluate(self, name: str, runtime: SourceRuntime, batch: Batch, hits: list[Hit]) -> Commit:
        events: list[QueuedEvent] = []
        # small enough steps that a crowded (half full) engine cannot overflow within one step
        step = max(1, min(HITS_PER_ROOM_CHECK, self.engine.config.max_open_alerts // 4))
        for start in range(0, len(hits), step):
            if self.engine.crowded():
                # Commit what this batch produced so far (in engine order, without the checkpoint: a crash
                # re-reads the batch), then let due resolves free room before opening more alerts.
                self.outbox.writer.submit(self.engine.commit(events))
                events = []
                await self.outbox.writer.backpressure()
                await self._wait_for_alert_room(name)
            events += hit_events(self.engine, name, runtime.ruleset.rules, batch.path,
                                 hits[start:start + step], time.time())
        change = self.engine.commit(events)
        if batch.checkpoint is not None:
            if batch.finished:
                change.forget_checkpoints.append((name, batch.checkpoint.key))
            else:
                change.checkpoints.append((name, batch.checkpoint.key, batch.checkpoint.state))
        return change

    async def _wait_for_alert_room(self, source: str) -> None:
        """A backlog read at full speed opens alerts faster than their quiet periods end. While some of them
        resolve within ALERT_ROOM_WAIT, pause the source (its lines wait in the file; nothing is lost) and
        resolve them early instead of growing memory without bound. Otherwise carry on: past
        ``max_open_alerts`` the engine suppresses new identities, counted and summarised."""
        paused = time.monotonic()
        while self.engine.crowded():
            now = time.time()
            due = self.engine.next_quiet_resolve()
            if due is None or due - now > ALERT_ROOM_WAIT:
                break
            await asyncio.sleep(max(0.1, due - now))
            # not awaited (the writer keeps engine order); a failure is the ticker's to report
            self._tick(time.time()).add_done_callback(lambda f: f.cancelled() or f.exception())
        waited = time.monotonic() - paused
        self.source_paused_seconds[source] = self.source_paused_seconds.get(source, 0.0) + waited
        if waited >= 0.1 and time.monotonic() - self._room_logged >= 60:
            self._room_logged = time.monotonic()
            log.info("source_paused_until_alerts_resolve", source=source, waited_s=round(waited, 2),
                     open_alerts=len(self.engine.states), max_open_alerts=self.engine.config.max_open_alerts)

    # --- checks ---------------------------------------------------------------------------------------

    def _start_checks(self) -> None:
        if not self.config.checks:
            self.checks = None
            return
        by_name = {c.name: c for c in self.config.checks}
        initial = {s.name: s.severity for s in self.engine.states.values() if s.kind == "check" and s.firing}

        async def observe(observation: CheckObservation) -> None:
            check = by_name.get(observation.check)
            if check is None:
                return
            run_key = (observation.check, observation.result.status)
            self.check_runs[run_key] = self.check_runs.get(run_key, 0) + 1
            events = self.engine.on_check(check, observation, time.time())
            await self.outbox.writer.commit(self.engine.commit(events))

        self.checks = CheckScheduler(self.config.checks, observe, initial_status=initial)
        checks = self.checks
        self.checks_task = asyncio.create_task(self._supervise("checks", checks.run), name="checks")

    async def _stop_checks(self) -> None:
        if self.checks_task is not None:
            self.checks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.checks_task
        self.checks_task = None
        self.checks = None

    # --- senders and time -------------------------------------------------------------------------------

    def _start_sender(self, name: str) -> None:
        sender = OutputSender(self.config.output(name), self.outbox, stdout=self.stdout, metrics=self.metrics)
        self.senders[name] = sender
        self.sender_tasks[name] = asyncio.create_task(self._supervise(f"sender:{name}", sender.run),
                                                      name=f"sender-{name}")

    async def _stop_sender(self, name: str) -> None:
        task = self.sender_tasks.pop(name, None)
        sender = self.senders.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if sender is not None:
            await sender.close()

    async def _ticker(self) -> None:
        """Once a second: quiet-period resolves and reminders; once a minute: expire over-age events."""
        last_expire = 0.0
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            try:
                await self._tick(now)
            except OutboxFull:
                return  # shutting down with a store that cannot write: nothing more to do here
            if now - last_expire >= 60:
                last_expire = now
                await self.outbox.queue.expire(now)

    def _tick(self, now: float) -> asyncio.Future[None]:
        """Resolves, reminders and storm summary due at ``now``, queued in engine order; the future
        completes when they are durable."""
        events = self.engine.tick(now)
        return self.outbox.writer.submit(self.engine.commit(events))

    def _alive_rules(self) -> set[tuple[str, str]]:
        alive = {(s.name, r.name) for s in [*self.config.logs, *self.config.journal] for r in s.rules}
        alive |= {("checks", c.name) for c in self.config.checks}
        return alive

    # --- reload -------------------------------------------------------------------------------------

    async def reload(self, *, quiet_if_unchanged: bool = False) -> bool:
        """Validate-then-swap. An invalid file changes nothing but the reported error."""
        if not self.config_path:
            return False
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                if str(exc) != self.config_error:
                    log.error("config_invalid_keeping_previous", errors=str(exc).splitlines())
                self.config_error = str(exc)
                self.metrics.reloads.labels("invalid").inc()
                return False
            self.config_error = ""
            for sender in self.senders.values():
                sender.refresh_url()  # a rotated push_url_file counts even when the config text is the same
            if new == self.config:
                if not quiet_if_unchanged:
                    self.metrics.reloads.labels("unchanged").inc()
                    log.info("config_unchanged")
                return True
            self.notifier.reloading()
            try:
                await self._apply(new)
            finally:
                self.notifier.ready(status="reloaded")
            self.last_reload = time.time()
            release_freed_memory()
            self.metrics.reloads.labels("applied").inc()
            log.info("config_reloaded", sources=list(self.sources), checks=len(new.checks))
            return True

    async def _apply(self, new: Config) -> None:
        old = self.config
        REDACTOR.add(new.secrets())
        for warning in secret_warnings(new, self.config_path):
            log.warning("secret_file_world_readable", detail=warning)
        if (new.state_dir, new.outbox) != (old.state_dir, old.outbox):
            log.warning("reload_ignored_needs_restart", keys=["state_dir", "outbox"])
            new = new.model_copy(update={"state_dir": old.state_dir, "outbox": old.outbox})
        self.config = new
        self.engine.reconfigure(new.alerts, host=new.host, global_labels=new.labels,
                                default_output=new.flashduty[0].name)
        old_outputs = {o.name: o for o in old.flashduty}
        for output in new.flashduty:
            if old_outputs.get(output.name) != output:
                await self._stop_sender(output.name)
                self._start_sender(output.name)
        for name in set(old_outputs) - {o.name for o in new.flashduty}:
            await self._stop_sender(name)
        new_sources = {s.name: s for s in [*new.logs, *new.journal]}
        for name, runtime in list(self.sources.items()):
            cfg = new_sources.get(name)
            if cfg is None:
                await self._stop_source(name)
            elif cfg.model_dump(exclude={"rules"}) != runtime.config.model_dump(exclude={"rules"}) or \
                    type(cfg) is not type(runtime.config):
                await self._stop_source(name)
                await self._start_source(cfg)
            elif cfg.rules != runtime.config.rules:
                runtime.ruleset = RuleSet(cfg.rules)  # swap rules in place: offsets and queue untouched
                runtime.config = cfg
        for name, cfg in new_sources.items():
            if name not in self.sources:
                await self._start_source(cfg)
        if new.checks != old.checks:
            await self._stop_checks()
            self._start_checks()
        events = self.engine.resolve_removed(self._alive_rules(), time.time())
        await self.outbox.writer.commit(self.engine.commit(events))
        if self.health is not None and new.health != old.health:
            log.warning("reload_ignored_needs_restart", keys=["health"])

    async def _watch_config(self) -> None:
        """Reload when the file changes: watchdog on its directory catches in-place edits and atomic
        renames (how Ansible/Salt/Puppet deploy); a 1 s mtime check covers filesystems without inotify."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        assert self.config_path is not None
        target = await asyncio.to_thread(Path(self.config_path).resolve)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        # Only writes matter: watchdog 7 also reports opens and read-only closes, and reacting to those
        # would make every reader of the file (and each reload's own read) trigger another reload.
        write_events = {"modified", "created", "moved", "deleted", "closed"}

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type not in write_events:
                    return
                paths = {str(event.src_path), str(getattr(event, "dest_path", "") or "")}
                if str(target) in paths or target.name in {os.path.basename(p) for p in paths}:
                    loop.call_soon_threadsafe(changed.set)

        observer = Observer()
        try:
            observer.schedule(Handler(), str(target.parent), recursive=False)
            observer.start()
        except OSError as exc:
            log.warning("config_watch_unavailable_using_mtime", error=str(exc))
        seen = _file_signature(target)
        # The file may have changed between the first load and now (the watch is armed late): check once.
        await self.reload(quiet_if_unchanged=True)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # the timeout doubles as the mtime safety net
                        await changed.wait()
                changed.clear()
                if _file_signature(target) == seen:
                    continue
                await asyncio.sleep(0.2)  # let an editor or config tool finish writing
                changed.clear()
                seen = _file_signature(target)
                await self.reload()
        finally:
            observer.stop()
            await asyncio.to_thread(observer.join, 2.0)

    # --- views ----------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        last_success = max((s.stats.last_success or 0 for s in self.senders.values()), default=0) or None
        return {
            "status": "ok" if self.ready else "starting",
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 3),
            "outbox_depth": self.outbox.stats.depth,
            "dead_letters": self.outbox.stats.dead_letters,
            "last_successful_delivery": last_success,
            "files_tailed": self._files_tailed(),
            "inotify_overflows": self.inotify.overflows,
            "open_alerts": sum(1 for s in self.engine.states.values() if s.firing),
            "config_error": self.config_error or None,
            "disk_full": self.outbox.stats.disk_full,
            "dry_run": all(s.dry_run for s in self.senders.values()),
        }

    def _files_tailed(self) -> int:
        total = 0
        for runtime in self.sources.values():
            files = runtime.source.status().get("files", [])
            total += sum(1 for f in files if f.get("state") in ("open", "draining")) if isinstance(files, list) else 0
        return total

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        if not self.ready:
            reasons.append("starting or stopping")
        for name, runtime in self.sources.items():
            if any(t.done() for t in runtime.tasks):
                reasons.append(f"source {name} is not running")
            elif not self._first_scan_done(runtime):
                reasons.append(f"source {name}: first scan of its files not finished")
        for name, task in self.sender_tasks.items():
            if task.done():
                reasons.append(f"sender {name} is not running")
        if self.outbox.stats.disk_full:
            reasons.append("outbox cannot write: disk full")
        return (not reasons, reasons)

    def status(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "host": self.config.host,
            "config_path": self.config_path,
            "last_reload": self.last_reload,
            "sources": {name: {"kind": type(rt.source).__name__, "batches": rt.batches,
                               "matcher": rt.ruleset.describe(), **rt.source.status()}
                        for name, rt in self.sources.items()},
            "rules": {k: v for k, v in self.engine.stats.matches.items()},
            "alerts": self.engine.open_alerts(),
            "events": dict(self.engine.stats.events),
            "suppressed": dict(self.engine.stats.suppressed),
            "checks": self.checks.status() if self.checks is not None else {},
            "outbox": {
                "depth": self.outbox.stats.depth,
                "bytes": self.outbox.stats.bytes,
                "oldest_age_seconds": self.outbox.queue.oldest_age(),
                "dead_letters": self.outbox.stats.dead_letters,
                "dropped": dict(self.outbox.stats.dropped),
                "disk_full": self.outbox.stats.disk_full,
                "last_error": self.outbox.stats.last_error,
                "store_reset": self.outbox.stats.store_reset,
            },
            "outputs": {name: sender.status() for name, sender in self.senders.items()},
        }

    def metrics_snapshot(self) -> dict[str, Any]:
        checks = self.checks.status() if self.checks is not None else {}
        def per_source(attr: str) -> dict[tuple[str, ...], float]:
            values: dict[tuple[str, ...], float] = {}
            for name, runtime in self.sources.items():
                values[(name,)] = float(getattr(runtime.source.stats, attr))
            return values

        return {
            "lines_read": per_source("lines_read"),
            "bytes_read": per_source("bytes_read"),
            "lines_truncated": per_source("lines_truncated"),
            "invalid_bytes": per_source("bytes_replaced"),
            "bytes_skipped": per_source("bytes_skipped"),
            "bytes_lost": per_source("bytes_lost"),
            "matches": {tuple(k.split("/", 1)): float(v) for k, v in self.engine.stats.matches.items()},
            "events": {(k,): float(v) for k, v in self.engine.stats.events.items()},
            "dropped": {(k,): float(v) for k, v in self.outbox.stats.dropped.items()},
            "suppressed": {(k,): float(v) for k, v in self.engine.stats.suppressed.items()},
            "check_runs": {k: float(v) for k, v in self.check_runs.items()},
            "source_paused": {(k,): v for k, v in self.source_paused_seconds.items()},
            "check_overruns": {(k,): float(v["skipped_overruns"]) for k, v in checks.items()},
            "check_callback_errors": {(k,): float(v["callback_errors"]) for k, v in checks.items()},
            "outbox_depth": self.outbox.stats.depth,
            "outbox_bytes": self.outbox.stats.bytes,
            "outbox_oldest_age": self.outbox.queue.oldest_age() or 0,
            "dead_letters": self.outbox.stats.dead_letters,
            "open_alerts": sum(1 for s in self.engine.states.values() if s.firing),
            "files_tailed": self._files_tailed(),
            "inotify_overflows": float(self.inotify.overflows),
            "config_error": 1 if self.config_error else 0,
            "disk_full": 1 if self.outbox.stats.disk_full else 0,
            "uptime": time.time() - self.started,
        }


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def install_signal_handlers(agent: Agent, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop gracefully; SIGHUP (``systemctl reload``) reloads the config."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(agent.reload()))
