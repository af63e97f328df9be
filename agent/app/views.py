"""What the agent shows of itself: ``/healthz`` (summary), ``/readyz``, ``/status`` and the metrics snapshot.

Read-only: every view is built on the event loop from the stages' own counters and status calls.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from agent import __version__
from agent.alerts import AlertEngine
from agent.app.checks import CheckRunner
from agent.app.outputs import Outputs
from agent.app.pipeline import PipelineStats
from agent.app.sources import SourceSet
from agent.config import Config
from agent.outbox import Outbox
from agent.tail import InotifyHub

STORE_RECREATED_NOTICE = 300.0
"""Seconds /readyz says the store was recreated after its state directory was deleted."""


class ViewedAgent(Protocol):
    """What the views read of the agent (``agent.app.agent.Agent``), and nothing else."""

    config: Config
    config_path: str | None
    ready: bool
    started: float
    config_error: str
    last_reload: float | None
    outbox: Outbox
    engine: AlertEngine
    inotify: InotifyHub
    sources: SourceSet
    outputs: Outputs
    checks: CheckRunner
    pipeline_stats: PipelineStats


class AgentViews:
    def __init__(self, agent: ViewedAgent) -> None:
        self.agent = agent

    def summary(self) -> dict[str, Any]:
        a = self.agent
        stats = a.outbox.stats
        return {
            "status": "ok" if a.ready else "starting",
            "version": __version__,
            "uptime_seconds": round(time.time() - a.started, 3),
            "outbox_depth": stats.depth,
            "dead_letters": stats.dead_letters,
            "last_successful_delivery": a.outputs.last_success(),
            "files_tailed": self._files_tailed(),
            "inotify_overflows": a.inotify.overflows,
            "open_alerts": self._open_alerts(),
            "config_error": a.config_error or None,
            "disk_full": stats.disk_full,
            "dry_run": a.outputs.dry_run(),
        }

    def readiness(self) -> tuple[bool, list[str]]:
        a = self.agent
        reasons = []
        if not a.ready:
            reasons.append("starting or stopping")
        for name, runtime in a.sources.running.items():
            if any(t.done() for t in runtime.tasks):
                reasons.append(f"source {name} is not running")
            elif not runtime.source.first_scan_done:
                reasons.append(f"source {name}: first scan of its files not finished")
        reasons += [f"sender {name} is not running" for name in a.outputs.not_running()]
        stats = a.outbox.stats
        if stats.disk_full:
            reasons.append("outbox cannot write: disk full")
        if stats.store_recreated and time.time() - stats.store_recreated_at < STORE_RECREATED_NOTICE:
            reasons.append(f"{stats.store_recreated} (nothing queued was lost; who deleted state_dir?)")
        return (not reasons, reasons)

    def status(self) -> dict[str, Any]:
        a = self.agent
        stats = a.outbox.stats
        return {
            **self.summary(),
            "host": a.config.host,
            "config_path": a.config_path,
            "last_reload": a.last_reload,
            "config_files": a.config.files,
            "sources": {name: {"kind": type(rt.source).__name__, "batches": rt.batches,
                               "config_file": a.config.origin(name), "format": list(rt.config.formats),
                               "parse_errors": {fmt: n for (src, fmt), n in a.pipeline_stats.parse_errors.items()
                                                if src == name},
                               "matcher": rt.ruleset.describe(),
                               "rule_processes": rt.processes.processes if rt.processes is not None else 0,
                               **rt.source.status()}
                        for name, rt in a.sources.running.items()},
            "rules": dict(a.engine.stats.matches),
            "alerts": a.engine.open_alerts(),
            # the agent's own blind spots; listed here too because one about the output that cannot deliver
            # waits in the outbox like every event
            "self_alerts": [{"condition": s.name, "object": s.fields.get("object", ""), "title": s.title,
                             "since": s.first_seen, "notified": s.notified}
                            for s in a.engine.self_states() if s.firing],
            "events": dict(a.engine.stats.events),
            "suppressed": dict(a.engine.stats.suppressed),
            "checks": {name: {**check, "config_file": a.config.origin(name)} if isinstance(check, dict) else check
                       for name, check in a.checks.status().items()},
            "outbox": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "oldest_age_seconds": a.outbox.queue.oldest_age(),
                "dead_letters": stats.dead_letters,
                "dropped": self._dropped(),
                "disk_full": stats.disk_full,
                "last_error": stats.last_error,
                "store_reset": stats.store_reset,
                "store_recreated": stats.store_recreated or None,
            },
            "outputs": {name: sender.status() for name, sender in a.outputs.senders.items()},
        }

    def metrics_snapshot(self) -> dict[str, Any]:
        a = self.agent
        checks = a.checks.status()
        stats = a.outbox.stats

        def per_source(attr: str) -> dict[tuple[str, ...], float]:
            return {(name,): float(getattr(rt.source.stats, attr)) for name, rt in a.sources.running.items()}

        return {
            "lines_read": per_source("lines_read"),
            "bytes_read": per_source("bytes_read"),
            "lines_truncated": per_source("lines_truncated"),
            "invalid_bytes": per_source("bytes_replaced"),
            "bytes_skipped": per_source("bytes_skipped"),
            "bytes_lost": per_source("bytes_lost"),
            "matches": {tuple(k.split("/", 1)): float(v) for k, v in a.engine.stats.matches.items()},
            "events": {(k,): float(v) for k, v in a.engine.stats.events.items()},
            "dropped": {(k,): float(v) for k, v in self._dropped().items()},
            "suppressed": {(k,): float(v) for k, v in a.engine.stats.suppressed.items()},
            "check_runs": {k: float(v) for k, v in a.checks.runs.items()},
            "lines_abandoned": {(name, rule): float(n) for name, rt in a.sources.running.items()
                                for rule, n in rt.ruleset.abandoned().items()},
            "source_paused": {(k,): v for k, v in a.pipeline_stats.paused_seconds.items()},
            "parse_errors": {k: float(v) for k, v in a.pipeline_stats.parse_errors.items()},
            "process_batches": {(k,): float(v) for k, v in a.pipeline_stats.process_batches.items()},
            "process_failures": {(k,): float(v) for k, v in a.pipeline_stats.process_failures.items()},
            "check_overruns": {(k,): float(v["skipped_overruns"]) for k, v in checks.items()},
            "check_callback_errors": {(k,): float(v["callback_errors"]) for k, v in checks.items()},
            "outbox_depth": stats.depth,
            "outbox_bytes": stats.bytes,
            "outbox_oldest_age": a.outbox.queue.oldest_age() or 0,
            "dead_letters": stats.dead_letters,
            "open_alerts": self._open_alerts(),
            "files_tailed": self._files_tailed(),
            "inotify_overflows": float(a.inotify.overflows),
            "config_error": 1 if a.config_error else 0,
            "disk_full": 1 if stats.disk_full else 0,
            "uptime": time.time() - a.started,
        }

    def _dropped(self) -> dict[str, int]:
        """The outbox's drops (full, expired) and the pipelines' (a batch that failed), by reason."""
        return {**self.agent.outbox.stats.dropped, **self.agent.pipeline_stats.dropped_lines}

    def _open_alerts(self) -> int:
        return sum(1 for s in self.agent.engine.states.values() if s.firing)

    def _files_tailed(self) -> int:
        """Files held open (or being finished) by the file sources: their counters, never a per-file walk (every
        /healthz and /metrics asks)."""
        total = 0
        for runtime in self.agent.sources.running.values():
            summary = getattr(runtime.source, "summary", None)
            status = summary() if summary is not None else runtime.source.status()
            if "files_tailed" in status:
                total += int(status["files_tailed"])
                continue
            files = status.get("files", [])
            total += sum(1 for f in files if f.get("state") in ("open", "draining")) if isinstance(files, list) else 0
        return total
