"""agent/metrics.py writes the Prometheus text format itself: byte for byte what prometheus_client's
``generate_latest`` wrote for the same instruments and snapshot (the implementation the agent had before),
so dashboards and alert rules see no difference; and importing it loads no prometheus_client."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agent import metrics as agent_metrics
from agent.metrics import Metrics, format_float

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402
from prometheus_client.utils import floatToGoString  # noqa: E402


class _OracleMetrics:
    """The agent's metrics as they were written with prometheus_client (the reference)."""

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
        self.registry.register(_OracleSnapshot(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _OracleSnapshot(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self._snapshot()
        # the same families, written by prometheus_client: the oracle for agent/metrics.py's text writer
        for name, doc, labels, values in agent_metrics.snapshot_counters(snap):
            family = CounterMetricFamily(name, doc, labels=labels)
            for label_values, value in values.items():
                family.add_metric(list(label_values), value)
            yield family
        for name, doc, value in agent_metrics.snapshot_gauges(snap):
            yield GaugeMetricFamily(name, doc, value=float(value or 0))


# The names dashboards and alerts depend on: renaming or dropping one is a breaking change, not a refactor.
SNAPSHOT_FAMILIES = {
    "dutytail_lines_read", "dutytail_bytes_read", "dutytail_lines_truncated", "dutytail_invalid_bytes",
    "dutytail_bytes_skipped", "dutytail_bytes_lost", "dutytail_rule_matches", "dutytail_lines_abandoned",
    "dutytail_parse_errors", "dutytail_rule_process_batches", "dutytail_rule_process_failures",
    "dutytail_events_queued", "dutytail_events_dropped", "dutytail_events_suppressed",
    "dutytail_source_paused_seconds", "dutytail_check_skipped_overruns", "dutytail_check_callback_errors",
    "dutytail_check_runs", "dutytail_inotify_overflows", "dutytail_outbox_depth", "dutytail_outbox_bytes",
    "dutytail_outbox_oldest_age_seconds", "dutytail_dead_letters", "dutytail_open_alerts", "dutytail_files_tailed",
    "dutytail_config_error", "dutytail_disk_full", "dutytail_up_seconds",
}


def test_the_snapshot_families_keep_their_names() -> None:
    snap = _snapshot(rich=True)
    names = [f[0] for f in agent_metrics.snapshot_counters(snap)] + [g[0] for g in agent_metrics.snapshot_gauges(snap)]
    assert sorted(names) == sorted(SNAPSHOT_FAMILIES)


def _snapshot(rich: bool) -> dict[str, Any]:
    empty: dict[tuple[str, ...], float] = {}
    snap: dict[str, Any] = {key: dict(empty) for key in (
        "lines_read", "bytes_read", "lines_truncated", "invalid_bytes", "bytes_skipped", "bytes_lost", "matches",
        "events", "dropped", "suppressed", "check_runs", "lines_abandoned", "source_paused", "parse_errors",
        "process_batches", "process_failures", "check_overruns", "check_callback_errors")}
    snap.update(outbox_depth=0, outbox_bytes=0, outbox_oldest_age=0, dead_letters=0, open_alerts=0, files_tailed=0,
                inotify_overflows=0.0, config_error=0, disk_full=0, uptime=12.5)
    if rich:
        snap["lines_read"] = {("app",): 2.0, ('we"ird\\name\nx',): 123456789.0}
        snap["bytes_read"] = {("app",): 1e20, ("big",): 12345678901.0}
        snap["matches"] = {("app", "db-timeout"): 1.0, ("app", "ünïcode rule"): 3.0}
        snap["check_runs"] = {("disk", "OK"): 4.0, ("disk", "CRITICAL"): 1.0}
        snap["source_paused"] = {("app",): 0.30000000000000004}
        snap["parse_errors"] = {("api", "json"): 7.0}
        snap.update(outbox_depth=5, outbox_bytes=2048, outbox_oldest_age=3.25, dead_letters=1, open_alerts=2,
                    files_tailed=976, inotify_overflows=1.0, config_error=1, disk_full=None, uptime=1e7)
    return snap


def _exercise(m: Any) -> None:
    for seconds in (0.004, 0.01, 0.011, 0.3, 2.5, 7.0, 11.0, 0.0):
        m.send_latency.labels("default").observe(seconds)
    m.send_latency.labels("second").observe(0.02)
    m.events_sent.labels("default").inc()
    m.events_sent.labels("default").inc(2.5)
    m.events_failed.labels("default", "retryable").inc()
    m.events_failed.labels("second", "permanent")
    m.reloads.labels("applied").inc()


@pytest.mark.parametrize("rich", [False, True])
@pytest.mark.parametrize("exercised", [False, True])
@pytest.mark.parametrize("attached", [False, True])
def test_render_is_byte_identical_to_prometheus_client(monkeypatch: pytest.MonkeyPatch, rich: bool, exercised: bool,
                                                       attached: bool) -> None:
    clock = iter(1764652800.0 + i * 0.123456 for i in range(1000))
    monkeypatch.setattr(time, "time", lambda: next(clock))
    ours = Metrics()
    clock = iter(1764652800.0 + i * 0.123456 for i in range(1000))
    oracle = _OracleMetrics()
    if exercised:
        clock = iter(1764652900.0 + i * 0.5 for i in range(1000))
        _exercise(ours)
        clock = iter(1764652900.0 + i * 0.5 for i in range(1000))
        _exercise(oracle)
    if attached:
        ours.attach(lambda: _snapshot(rich))
        oracle.attach(lambda: _snapshot(rich))
    assert ours.render().decode() == oracle.render().decode()


def test_created_series_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics()
    m.events_sent.labels("default").inc()
    assert b"dutytail_events_sent_created" in m.render()
    monkeypatch.setenv("PROMETHEUS_DISABLE_CREATED_SERIES", "true")
    text = m.render().decode()
    assert "_created" not in text and 'dutytail_events_sent_total{output="default"} 1.0' in text


@pytest.mark.parametrize("value", [0.0, 1.0, -1.0, 0.1, 1e-9, 123456.0, 1234567.0, 12345678.5, 1e20, -1e20, 1.5e300,
                                   math.inf, -math.inf, math.nan, 1764652800.123456, 5, 7.0000001])
def test_floats_as_go_writes_them(value: float) -> None:
    assert format_float(value) == floatToGoString(value)


def test_counters_refuse_to_go_down() -> None:
    m = Metrics()
    with pytest.raises(ValueError):
        m.events_sent.labels("default").inc(-1)
    with pytest.raises(ValueError):
        m.events_failed.labels("default")


def test_importing_the_metrics_loads_no_prometheus_client() -> None:
    code = "import sys, agent.metrics; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert agent_metrics.__name__ == "agent.metrics"
