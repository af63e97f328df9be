"""Prometheus metrics. One set per agent so tests (and several agents in one process) never collide.

Most numbers already live in each stage's stats object; the snapshot collector reads them at scrape time,
so the hot path (tail/match) pays nothing for metrics. Only what needs a distribution (send latency) or
is incremented in the sender is an instrument of its own (``Counter``, ``Histogram``).

The text exposition format (0.0.4) is written here, byte for byte what prometheus_client's
``generate_latest`` writes for the same instruments (``_total`` counters, ``_created`` series unless
``PROMETHEUS_DISABLE_CREATED_SERIES`` is set, Go-style floats; tests/test_metrics.py compares the two):
importing prometheus_client held ~1 MiB of an idle agent's RSS (and its http.server, wsgiref, urllib
imports) for a page that a scrape reads a few times a minute at most. Everything runs on the event loop.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

LabelValues = tuple[str, ...]


def _use_created() -> bool:
    return os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() not in ("true", "1", "t")


def format_float(value: float) -> str:
    """A sample value as Go (and prometheus_client) writes it: ``+Inf``, ``NaN``, ``1.0``, ``1.7e+09``."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _sample(name: str, labels: Iterable[tuple[str, str]], value: float) -> str:
    pairs = sorted(labels)
    text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs)
    return f"{name}{{{text}}} {format_float(value)}\n" if text else f"{name} {format_float(value)}\n"


def _header(name: str, doc: str, kind: str) -> str:
    return f"# HELP {name} {_escape_help(doc)}\n# TYPE {name} {kind}\n"


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "buckets", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        for i, bound in enumerate(self.bounds):
            if amount <= bound:
                self.buckets[i] += 1
                break


class _Instrument:
    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[LabelValues, Any] = {}

    def labels(self, *values: str) -> Any:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._new_child()
        return child

    def _new_child(self) -> Any:
        raise NotImplementedError

    def render(self, created: bool) -> str:
        raise NotImplementedError

    def _created_block(self, lines: list[str]) -> str:
        if not lines:
            return ""
        return _header(f"{self.name}_created", self.documentation, "gauge") + "".join(lines)


class Counter(_Instrument):
    """A labelled counter (``labels(...).inc()``), rendered as ``<name>_total`` and ``<name>_created``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames)

    def _new_child(self) -> _CounterChild:
        return _CounterChild()

    def render(self, created: bool) -> str:
        out = [_header(f"{self.name}_total", self.documentation, "counter")]
        created_lines = []
        for values, child in list(self._children.items()):
            labels = list(zip(self.labelnames, values, strict=True))
            out.append(_sample(f"{self.name}_total", labels, child.value))
            if created:
                created_lines.append(_sample(f"{self.name}_created", labels, child.created))
        return "".join(out) + self._created_block(created_lines)


class Histogram(_Instrument):
    """A labelled histogram (``labels(...).observe(x)``): cumulative ``_bucket`` series, ``_count``, ``_sum``."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        super().__init__(name, documentation, labelnames)
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.bounds = tuple(bounds)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def render(self, created: bool) -> str:
        out = [_header(self.name, self.documentation, "histogram")]
        created_lines = []
        for values, child in list(self._children.items()):
            labels = list(zip(self.labelnames, values, strict=True))
            acc = 0.0
            for bound, count in zip(child.bounds, child.buckets, strict=True):
                acc += count
                out.append(_sample(f"{self.name}_bucket", [*labels, ("le", format_float(bound))], acc))
            out.append(_sample(f"{self.name}_count", labels, acc))
            if child.bounds[0] >= 0:
                out.append(_sample(f"{self.name}_sum", labels, child.sum))
            if created:
                created_lines.append(_sample(f"{self.name}_created", labels, child.created))
        return "".join(out) + self._created_block(created_lines)


class Metrics:
    def __init__(self) -> None:
        self.send_latency = Histogram(
            "dutytail_send_latency_seconds", "Time of one POST to Flashduty, by output.", ["output"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.events_sent = Counter("dutytail_events_sent_total", "Events accepted by Flashduty.", ["output"])
        self.events_failed = Counter("dutytail_events_failed_total", "Failed send attempts by kind.",
                                     ["output", "kind"])
        self.reloads = Counter("dutytail_config_reloads_total", "Config reload attempts by result.", ["result"])
        for result in ("applied", "unchanged", "invalid"):
            self.reloads.labels(result)
        self.instruments: list[_Instrument] = [self.send_latency, self.events_sent, self.events_failed, self.reloads]
        self._snapshots: list[Callable[[], dict[str, Any]]] = []

    def attach(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Render the agent's stats (``AgentViews.metrics_snapshot``), read at scrape time, after the instruments."""
        self._snapshots.append(snapshot)

    def render(self) -> bytes:
        created = _use_created()
        parts = [instrument.render(created) for instrument in self.instruments]
        parts += ["".join(_snapshot_families(snapshot())) for snapshot in self._snapshots]
        return "".join(parts).encode("utf-8")


CounterFamily = tuple[str, str, list[str], dict[tuple[str, ...], float]]
"""(name without ``_total``, help, label names, label values -> value)."""


def snapshot_counters(snap: dict[str, Any]) -> list[CounterFamily]:
    """The counter families of an agent snapshot (``Views.metrics_snapshot``)."""
    return [
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
        ("dutytail_rule_process_batches", "Batches of a structured backlog matched in a rule process "
         "(rule_processes).", ["source"], snap["process_batches"]),
        ("dutytail_rule_process_failures", "Batches a rule process failed on (matched again in the agent process; "
         "nothing lost).", ["source"], snap["process_failures"]),
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


def snapshot_gauges(snap: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """The gauge families of an agent snapshot: (name, help, value)."""
    return [
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


def _snapshot_families(snap: dict[str, Any]) -> Iterator[str]:
    for name, doc, labelnames, values in snapshot_counters(snap):
        lines = [_header(f"{name}_total", doc, "counter")]
        for label_values, value in values.items():
            lines.append(_sample(f"{name}_total", zip(labelnames, map(str, label_values), strict=True), value))
        yield "".join(lines)
    for name, doc, value in snapshot_gauges(snap):
        yield _header(name, doc, "gauge") + _sample(name, (), float(value or 0))
