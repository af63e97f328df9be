"""From an alert state to what Flashduty sees: template values, labels, and the queued event.

Every lifecycle (log rules, checks, storm control) renders through here, so an alert's labels and
template fields mean the same whatever produced it, and the event body is built in one place with the
protocol's limits applied (``agent.events.Event``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from agent.alerts.state import AlertState
from agent.events import SOURCE_LABEL_FIELDS, Event, Status, render
from agent.outbox import QueuedEvent

log = structlog.get_logger(__name__)


def iso(ts: float) -> str:
    """An alert time as shown in titles and descriptions (``-`` when it never happened)."""
    return _iso_second(int(ts)) if ts else "-"


@functools.lru_cache(maxsize=256)
def _iso_second(second: int) -> str:
    """Formatting a time costs more than the rest of a new alert's bookkeeping; a burst shares seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


class Renderer:
    """Renders for one host: its name and the config's global labels (swapped on reload)."""

    __slots__ = ("_empty_key_logged", "global_labels", "host")

    def __init__(self, host: str, global_labels: Mapping[str, str]) -> None:
        self.host = host
        self.global_labels = dict(global_labels)
        self._empty_key_logged: set[str] = set()

    def alert_key(self, template: str, values: Mapping[str, Any], fallback: Callable[[], str], owner: str) -> str:
        """An ``alert_key`` template rendered; when it comes out empty (a group that matched nothing) the
        default key instead: an event with an empty key cannot be closed (its Ok is rejected)."""
        key = render(template, values)
        if key.strip():
            return key
        if owner not in self._empty_key_logged:
            self._empty_key_logged.add(owner)
            log.warning("alert_key_template_empty_using_default", owner=owner, template=template,
                        note="an Ok needs the same non-empty key; the default key (host, source, rule) is used")
        return fallback()

    def values(self, state: AlertState) -> dict[str, Any]:
        """The fields a title, description or label template may name."""
        return {
            **self.global_labels,
            **state.labels,
            # the alert's severity, unless the line has a field of that name (a record's `status: 503`)
            "severity": state.severity,
            "status": state.severity,
            **state.fields,
            "host": self.host,
            "source": state.source,
            "rule": state.name,
            "check": state.name,
            "count": state.count,
            "first_seen": iso(state.first_seen),
            "last_seen": iso(state.last_seen),
            "samples": "\n".join([f"> {s}" for s in state.samples]),
        }

    def labels(self, state: AlertState, own: Mapping[str, str]) -> dict[str, str]:
        """Automatic labels first (they survive the 50-label cut), then the rule's, then the global ones. A
        label whose value is empty (a template over a field the line did not have) is left out."""
        auto = {"host": self.host, "source": state.source}
        if state.kind in ("log", "absent", "expect"):
            auto["rule"] = state.name
            if state.fields.get("path"):
                auto["path"] = state.fields["path"]
            for name in SOURCE_LABEL_FIELDS:  # the Kubernetes pod a container log belongs to
                if state.fields.get(name):
                    auto[name] = state.fields[name]
        elif state.kind == "check":
            auto["check"] = state.name
        merged = {**auto, **own}
        for k, v in self.global_labels.items():
            merged.setdefault(k, v)
        return {k: v for k, v in merged.items() if v != ""}


def build_event(state: AlertState, status: Status, title: str, description: str, now: float) -> QueuedEvent:
    """The outbox entry for one event of ``state``; anything cut to the protocol's limits is logged."""
    event = Event(title=title, status=status, alert_key=state.key, description=description,
                  labels=state.labels, event_time=int(now))
    body = event.to_body()
    if event.adjustments:
        log.info("event_adjusted_to_protocol_limits", alert_key=state.key, adjustments=event.adjustments)
    return QueuedEvent(output=state.output, alert_key=body["alert_key"], body=body)
