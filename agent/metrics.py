"""Prometheus metrics. One registry per agent so tests (and several agents in one process) never collide.

Most numbers already live in each stage's stats object; a custom collector reads them at scrape time,
so the hot path (tail/match) pays nothing for metrics. Only what needs a distribution (send latency) or
is incremented in the sender is a native prometheus-client instrument.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.send_latency = Histogram(
            "dutytail_send_latency_seconds", "Time of one POST to Flashduty, by output.", ["output"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry,
        )
        self.events_sent = Counter("dutytail_events_sent_total", "Events accepted by Flashduty.", ["output"],
                                   registry=self.registry)
        self.events_failed = Counter("dutytail_events_failed_total", "Failed send attempts by kind.",
                                     ["output", "kind"], registry=self.registry)
        self.reloads = Counter("dutytail_config_reloads_total", "Config reload attempts by result.", ["result"],
                               registry=self.registry)
        for result in ("applied", "unchanged", "invalid"):
            self.reloads.labels(result)

    def attach(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Register the collector that reads the agent's stats (``Agent.metrics_snapshot``) at scrape time."""
        self.registry.register(_SnapshotCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        counters: list[tuple[str, str, list[str], dict[tuple[str, ...], float]]] = [
            ("dutytail_lines_read", "Lines read by source.", ["source"], snap["lines_read"]),
            ("dutytail_bytes_read", "Bytes read by source.", ["source"], snap["bytes_read"]),
            ("dutytail_lines_truncated", "Over-long lines truncated by source.", ["source"], snap["lines_truncated"]),
            ("dutytail_invalid_bytes", "Undecodable bytes replaced by source.", ["source"], snap["invalid_bytes"]),
            ("dutytail_bytes_skipped", "Bytes of over-long lines skipped (beyond max_line_bytes).", ["source"],
             snap["bytes_skipped"]),
            ("dutytail_bytes_lost", "Log bytes that could not be read (e.g. rotated away and compressed while "
             "stopped, truncated without a copy).", ["source"], snap["bytes_lost"]),
            ("dutytail_rule_matches", "Lines that matched a rule.", ["source", "rule"], snap["matches"]),
            ("dutytail_lines_abandoned", "Lines a rule gave up on: its regex ran over the per-line time budget "
             "(catastrophic backtracking).", ["source", "rule"], snap["lines_abandoned"]),
            ("dutytail_parse_errors", "Lines of a structured source that did not parse as its format (matched "
             "as plain text instead).", ["source", "format"], snap["parse_errors"]),
            ("dutytail_events_queued", "Events committed to the outbox, by status.", ["status"], snap["events"]),
            ("dutytail_events_dropped", "Events the agent dropped, by reason.", ["reason"], snap["dropped"]),
            ("dutytail_events_suppressed", "Events held back by storm control, by reason.", ["reason"],
             snap["suppressed"]),
            ("dutytail_source_paused_seconds", "Seconds a source waited for open alerts to resolve "
             "(alerts.max_open_alerts half full).", ["source"], snap["source_paused"]),
            ("dutytail_check_skipped_overruns", "Check runs skipped because the previous run was still going.",
             ["check"], snap["check_overruns"]),
            ("dutytail_check_callback_errors", "Check results the agent failed to process (a bug; logged).",
             ["check"], snap["check_callback_errors"]),
            ("dutytail_check_runs", "Check runs by check and raw status.", ["check", "status"], snap["check_runs"]),
            ("dutytail_inotify_overflows", "inotify queue overflows (events lost; every file source rescanned).",
             [], {(): snap["inotify_overflows"]}),
        ]
        for name, doc, labels, values in counters:
            family = CounterMetricFamily(name, doc, labels=labels)
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family
        gauges = [
            ("dutytail_outbox_depth", "Events waiting in the outbox.", snap["outbox_depth"]),
            ("dutytail_outbox_bytes", "Bytes of events waiting in the outbox.", snap["outbox_bytes"]),
            ("dutytail_outbox_oldest_age_seconds", "Age of the oldest queued event.", snap["outbox_oldest_age"]),
            ("dutytail_dead_letters", "Events rejected by Flashduty and kept as dead letters.", snap["dead_letters"]),
            ("dutytail_open_alerts", "Alerts currently firing.", snap["open_alerts"]),
            ("dutytail_files_tailed", "Files currently tailed.", snap["files_tailed"]),
            ("dutytail_config_error", "1 while the config file on disk is invalid (the old one runs).",
             snap["config_error"]),
            ("dutytail_disk_full", "1 while the outbox cannot write (disk full).", snap["disk_full"]),
            ("dutytail_up_seconds", "Seconds since the agent started.", snap["uptime"]),
        ]
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=float(value or 0))
