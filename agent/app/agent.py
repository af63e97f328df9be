"""The agent's lifecycle: start the stages in dependency order, serve, reload, shut down without loss.

Data flows one way: sources put batches on bounded queues -> a pipeline per source evaluates rules (in worker
threads) and feeds the alert engine -> the outbox's one ordered writer commits events, the source checkpoint
and the alert state together -> senders deliver from the outbox. A stage never calls back upstream;
backpressure is the bounded queue and the writer. This module only wires and sequences; each concern lives in
its own room of ``agent/app/`` (pipeline, sources, outputs, checks, ticker, reload, views, config watch).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import time
from pathlib import Path
from typing import Any, TextIO

import structlog

from agent import __version__
from agent.alerts import AlertEngine
from agent.app.checks import CheckRunner
from agent.app.config_watch import ConfigWatch
from agent.app.look import SourceLooks
from agent.app.outputs import Outputs
from agent.app.pipeline import PipelineStats
from agent.app.reload import ReloadPlan, plan_reload
from agent.app.self_alerts import SelfAlerts
from agent.app.sources import SourceSet
from agent.app.supervise import supervise
from agent.app.ticker import AlertTicker
from agent.app.views import AgentViews
from agent.config import Config, ConfigError, load_config, secret_warnings
from agent.health import HealthServer
from agent.logsetup import LIVE_REDACTORS, Redactor
from agent.metrics import Metrics
from agent.outbox import Outbox
from agent.sdnotify import SystemdNotifier, watchdog_loop
from agent.tail import InotifyHub

log = structlog.get_logger(__name__)


def release_freed_memory() -> None:
    """Hand memory freed during startup or a reload (hyperscan's compiler, config parsing) back to the OS:
    glibc keeps it mapped otherwise, ~3 MiB of an idle agent's RSS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc; elsewhere there is nothing to trim


class Agent:
    """One running dutytail. ``await Agent(config).run(stop_event)``; ``reload()`` swaps in a new config."""

    def __init__(self, config: Config, config_path: str | None = None, *, stdout: TextIO | None = None,
                 notifier: SystemdNotifier | None = None, redactor: Redactor | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.notifier = notifier or SystemdNotifier()
        self.redactor = redactor if redactor is not None else Redactor()
        self.redactor.set(config.secrets())
        self.metrics = Metrics()
        self.started = time.time()
        self.ready = False
        self.config_error = ""
        self.last_reload: float | None = None
        self.outbox = Outbox(config.state_dir, config.outbox)
        self.engine = AlertEngine(config.alerts, host=config.host, global_labels=config.labels,
                                  default_output=config.flashduty[0].name)
        self.inotify = InotifyHub()  # one inotify observer for every file source and the config watch
        self.ticker = AlertTicker(self.engine, self.outbox)
        self.pipeline_stats = PipelineStats()
        self.sources = SourceSet(self.outbox, self.engine, self.inotify, self.ticker.tick, self.pipeline_stats,
                                 rules_cache=str(Path(config.state_dir) / "match-cache"),
                                 rule_processes=config.processes())
        self.outputs = Outputs(self.outbox, metrics=self.metrics, redactor=self.redactor, stdout=stdout)
        self.checks = CheckRunner(self.engine, self.outbox, self.redactor)
        self.engine.set_source_look(SourceLooks(self.sources))
        self.self_alerts = SelfAlerts(self.engine, self.outbox, self.sources, lambda: self.config,
                                      lambda: self.config_error, config_path)
        self.views = AgentViews(self)
        self.health: HealthServer | None = None
        self._background: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, serve until ``stop`` is set, then shut down gracefully."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    async def start(self) -> None:
        LIVE_REDACTORS.register(self.redactor)
        self._warn_secret_files(self.config)
        await asyncio.to_thread(Path(self.config.state_dir).mkdir, parents=True, exist_ok=True)
        await self.outbox.open(exclusive=True)
        self.engine.restore(await self.outbox.alert_states())
        await self.outbox.writer.commit(self.engine.commit(self.engine.resolve_removed(self._alive_rules(),
                                                                                      time.time())))
        for output in self.config.flashduty:
            self.outputs.start(output)
        for source_config in [*self.config.logs, *self.config.journal]:
            await self.sources.start(source_config)
        self.checks.start(self.config.checks)
        self._background.append(asyncio.create_task(self.ticker.run(), name="alert-ticker"))
        self._background.append(asyncio.create_task(supervise("self-alerts", self.self_alerts.run),
                                                    name="self-alerts"))
        if self.config.health.enabled:
            views = self.views
            self.health = HealthServer(self.config.health, summary=views.summary, ready=views.readiness,
                                       status=views.status, metrics=self.metrics.render, redactor=self.redactor)
            self.metrics.attach(views.metrics_snapshot)
            await self.health.start()
        interval = self.notifier.watchdog_interval()
        if interval:
            self._background.append(asyncio.create_task(watchdog_loop(self.notifier, interval), name="watchdog"))
        if self.config_path:
            watch = ConfigWatch(self.config_path, self.inotify, self.reload, lambda: self.config.include_globs)
            self._background.append(asyncio.create_task(supervise("config-watch", watch.run), name="config-watch"))
        await self.sources.wait_first_scans()
        self.ready = True
        release_freed_memory()
        self.outputs.prepare()
        self.notifier.ready(status=f"dutytail {__version__}: {len(self.sources.running)} sources, "
                                   f"{len(self.config.checks)} checks")
        log.info("agent_ready", version=__version__, sources=list(self.sources.running),
                 checks=len(self.config.checks),
                 outputs=[s.status()["url"] for s in self.outputs.senders.values()], state_dir=self.config.state_dir)

    async def shutdown(self) -> None:
        """Stop sources, commit what they read, flush what can be sent in time, keep the rest on disk."""
        self.notifier.stopping()
        self.outbox.writer.begin_shutdown()  # failing commits stop retrying
        self.ready = False
        log.info("agent_stopping")
        await self.sources.stop_all()
        await self.checks.stop()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.outputs.drain_and_stop(self.config.shutdown_timeout)
        if self.health is not None:
            await self.health.stop()
        await asyncio.to_thread(self.inotify.stop)
        await self.outbox.close()  # commits what is still queued (checks, reload) first
        log.info("agent_stopped", queued=self.outbox.stats.depth)
        LIVE_REDACTORS.unregister(self.redactor)

    # --- views (the health server's and tests' way in) ------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self.views.status()

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
            self.outputs.refresh_urls()
            if new == self.config:
                if not quiet_if_unchanged:
                    self.metrics.reloads.labels("unchanged").inc()
                    log.info("config_unchanged")
                return True
            self.notifier.reloading()
            try:
                await self._apply(plan_reload(self.config, new, {n: rt.config for n, rt in
                                                                 self.sources.running.items()}))
            finally:
                self.notifier.ready(status="reloaded")
            self.last_reload = time.time()
            release_freed_memory()
            self.metrics.reloads.labels("applied").inc()
            log.info("config_reloaded", sources=list(self.sources.running), checks=len(new.checks))
            return True

    async def _apply(self, plan: ReloadPlan) -> None:
        new = plan.config
        self.redactor.set(new.secrets())
        self._warn_secret_files(new)
        if plan.needs_restart:
            log.warning("reload_ignored_needs_restart", keys=plan.needs_restart)
        self.config = new
        self.engine.reconfigure(new.alerts, host=new.host, global_labels=new.labels,
                                default_output=new.flashduty[0].name)
        for name in plan.outputs_stop:
            await self.outputs.stop(name)
        for name in plan.outputs_start:
            self.outputs.start(new.output(name))
        self.outputs.prepare()  # a dry run given a push URL
        for name in plan.sources_stop:
            await self.sources.stop(name)
        for cfg in plan.sources_new_rules:
            await self.sources.swap_rules(cfg)
        for cfg in plan.sources_start:
            await self.sources.start(cfg)
        if plan.checks_changed:
            await self.checks.stop()
            self.checks.start(new.checks)
        events = self.engine.resolve_removed(self._alive_rules(), time.time())
        await self.outbox.writer.commit(self.engine.commit(events))

    # --- helpers -----------------------------------------------------------------------------------

    def _alive_rules(self) -> set[tuple[str, str]]:
        alive = {(s.name, r.name) for s in [*self.config.logs, *self.config.journal] for r in s.rules}
        alive |= {("checks", c.name) for c in self.config.checks}
        return alive

    def _warn_secret_files(self, config: Config) -> None:
        for warning in secret_warnings(config, self.config_path):
            log.warning("secret_file_world_readable", detail=warning)


def install_signal_handlers(agent: Agent, stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT stop gracefully; SIGHUP (``systemctl reload``) reloads the config."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(agent.reload()))
