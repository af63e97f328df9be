"""The alert state machine: matches and check results in, Flashduty events out, once per state change.

A log that repeats one error 10,000 times becomes one alert that opens (``Critical``), may remind while it
continues, and closes by itself with ``Ok`` when the error stops. The same machine serves checks, whose
state changes come from results instead of lines.

States live in memory and every change is handed out (``take_changes``) to be committed in the same SQLite
transaction as the events it produced, so an alert opened before a restart still gets its ``Ok`` after it.
The clock is injected: the agent passes wall time, ``dutytail test-rule`` passes time read from the log.
"""

from __future__ import annotations

import bisect
import collections
import functools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field

from agent.events import Event, Status, json_text, render, stable_alert_key
from agent.outbox import QueuedEvent
from agent.units import Duration

log = structlog.get_logger(__name__)

Kind = Literal["log", "check", "storm"]


class AlertsConfig(BaseModel):
    """`alerts:` — defaults and storm control shared by every rule and check."""

    model_config = ConfigDict(extra="forbid")

    default_resolve_after: Duration = 600.0  # quiet period for log rules that set neither resolve.after nor .match
    max_events_per_key_per_minute: int = Field(default=6, ge=1)
    max_events_per_minute: int = Field(default=300, ge=1)
    # Alerts tracked at once (open, or pending a threshold). Bounds memory (~1.5 KiB each) when a backlog
    # holds many distinct identities; past half of it a log source pauses while open alerts are about to
    # resolve, and at the cap a new identity is suppressed (counted, logged, summarised) instead of tracked.
    max_open_alerts: int = Field(default=20_000, ge=4)


class RuleLike(Protocol):
    """What the engine needs of a log rule (``agent.rules.RuleConfig`` satisfies it)."""

    name: str
    severity: Literal["Critical", "Warning", "Info"]
    title: str
    description: str
    alert_key: str | None
    identity: list[str]
    labels: dict[str, str]
    repeat_interval: float
    samples: int
    output: str | None

    @property
    def threshold(self) -> Any: ...

    @property
    def resolve(self) -> Any: ...


@dataclass(slots=True)
class AlertState:
    """One alert identity. Everything needed to remind and resolve it is here, even if the rule changes."""

    key: str
    kind: Kind
    source: str
    name: str  # rule or check name
    output: str
    severity: Status = "Warning"
    firing: bool = False
    notified: bool = False  # the server has this alert open (a non-Ok event went out)
    owed: bool = False  # storm control held back an update that is still to be sent
    first_seen: float = 0.0
    last_seen: float = 0.0
    count: int = 0
    last_notified: float = 0.0
    title: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    max_samples: int = 3
    resolve_after: float | None = None
    repeat_interval: float = 0.0
    suppressed: int = 0
    flapping: bool = False
    window: list[float] = field(default_factory=list)  # match times while pending (threshold not reached)

    def to_json(self) -> str:
        # field by field: dataclasses.asdict deep-copies recursively and showed up in the hot path
        return json_text({name: getattr(self, name) for name in _PERSISTED_FIELDS})

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        data = json.loads(text)
        allowed = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in allowed})


# samples only feed the description when the alert fires, which has happened by the time it is persisted
_PERSISTED_FIELDS = [f.name for f in fields(AlertState) if f.name not in ("window", "samples")]


def _iso(ts: float) -> str:
    return _iso_second(int(ts)) if ts else "-"


@functools.lru_cache(maxsize=256)
def _iso_second(second: int) -> str:
    """Formatting a time costs more than the rest of a new alert's bookkeeping; a burst shares seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


@dataclass(slots=True)
class EngineStats:
    events: collections.Counter[str] = field(default_factory=collections.Counter)  # by status
    suppressed: collections.Counter[str] = field(default_factory=collections.Counter)  # by reason
    matches: collections.Counter[str] = field(default_factory=collections.Counter)  # "source/rule"


class AlertEngine:
    """Owns every alert's state; all methods run on the event loop (no locking needed)."""

    def __init__(self, config: AlertsConfig, *, host: str, global_labels: Mapping[str, str],
                 default_output: str) -> None:
        self.config = config
        self.host = host
        self.global_labels = dict(global_labels)
        self.default_output = default_output
        self.states: dict[str, AlertState] = {}
        self.stats = EngineStats()
        self._changed: set[str] = set()
        self._removed: set[str] = set()
        self._key_sends: dict[str, list[float]] = {}
        # sends in the last minute, counted per second: O(60) memory however high the caps are raised
        self._global_sends: collections.deque[list[int]] = collections.deque()  # [second, count]
        self._global_total = 0
        self._storm_window: collections.deque[tuple[float, int]] = collections.deque()
        self._storm_key = stable_alert_key(host, "dutytail", "storm-control")
        self._capacity_logged = 0.0  # when the last "too many open alerts" warning was logged
        self._capacity_unlogged = 0  # identities suppressed since then

    # --- persistence -------------------------------------------------------------------------------

    def restore(self, rows: Mapping[str, str]) -> None:
        for key, text in rows.items():
            try:
                self.states[key] = AlertState.from_json(text)
            except (ValueError, TypeError) as exc:
                log.error("alert_state_unreadable", alert_key=key, error=str(exc))
                self._removed.add(key)

    def take_changes(self) -> tuple[list[tuple[str, str]], list[str]]:
        """State rows to upsert and keys to delete since the last call (for the next outbox commit)."""
        upserts = [(k, self.states[k].to_json()) for k in self._changed if k in self.states and self.states[k].firing]
        removed = list(self._removed | {k for k in self._changed if k not in self.states})
        self._changed.clear()
        self._removed.clear()
        return upserts, removed

    def open_alerts(self) -> list[dict[str, Any]]:
        return [
            {"alert_key": s.key, "kind": s.kind, "source": s.source, "name": s.name, "severity": s.severity,
             "count": s.count, "first_seen": s.first_seen, "last_seen": s.last_seen, "notified": s.notified,
             "flapping": s.flapping}
            for s in self.states.values() if s.firing
        ]

    # --- log rules ---------------------------------------------------------------------------------

    def rule_alert_key(self, source: str, rule: RuleLike, groups: Mapping[str, str], path: str) -> str:
        if rule.alert_key:
            values = {**self.global_labels, **rule.labels, **groups, "host": self.host, "source": source,
                      "rule": rule.name, "path": path}
            return render(rule.alert_key, values)
        identity = [f"{name}={groups.get(name, '')}" for name in rule.identity]
        return stable_alert_key(self.host, source, rule.name, *identity)

    def on_match(self, source: str, rule: RuleLike, path: str, line: str, groups: Mapping[str, str],
                 now: float) -> list[QueuedEvent]:
        self.stats.matches[f"{source}/{rule.name}"] += 1
        key = self.rule_alert_key(source, rule, groups, path)
        state = self.states.get(key)
        if state is None:
            if len(self.states) >= self.config.max_open_alerts:
                self._over_capacity(key, rule.name, now)
                return []
            resolve_after = rule.resolve.after
            if resolve_after is None and rule.resolve.match is None:
                resolve_after = self.config.default_resolve_after
            state = AlertState(key=key, kind="log", source=source, name=rule.name,
                               output=rule.output or self.default_output, severity=rule.severity,
                               max_samples=rule.samples, resolve_after=resolve_after,
                               repeat_interval=rule.repeat_interval)
            self.states[key] = state
        # bounded: a 64 KiB line must not make every persisted alert state 64 KiB
        state.fields = {**{k: str(v)[:1000] for k, v in groups.items()}, "line": line[:2000], "path": path}
        state.last_seen = now
        if rule.samples:
            state.samples.append(line[:500])
            del state.samples[: -rule.samples]
        if state.firing:
            state.count += 1
            self._changed.add(key)
            return []
        within = rule.threshold.within
        state.window.append(now)
        state.window = [t for t in state.window if t > now - within]
        if len(state.window) < rule.threshold.count:
            return []  # pending: not enough matches in the window yet
        state.firing = True
        state.first_seen = state.window[0]
        state.count = len(state.window)
        state.window = []
        state.severity = rule.severity
        self._render_rule(state, rule)
        self._changed.add(key)
        return self._notify(state, state.severity, now)

    def on_resolve_match(self, source: str, rule: RuleLike, path: str, line: str, groups: Mapping[str, str],
                         now: float) -> list[QueuedEvent]:
        key = self.rule_alert_key(source, rule, groups, path)
        state = self.states.get(key)
        if state is None:
            return []
        if not state.firing:
            del self.states[key]  # a pending window is cancelled by the recovery line
            return []
        return self._resolve(state, now, f"Recovered: {line[:1000]}")

    def _render_rule(self, state: AlertState, rule: RuleLike) -> None:
        values = self._values(state)
        state.title = render(rule.title, values)
        state.description = render(rule.description, values)
        state.labels = self._labels(state, {**{k: render(v, values) for k, v in rule.labels.items()},
                                            **{n: state.fields.get(n, "") for n in rule.identity}})

    def _values(self, state: AlertState) -> dict[str, Any]:
        return {
            **self.global_labels,
            **state.labels,
            **state.fields,
            "host": self.host,
            "source": state.source,
            "rule": state.name,
            "check": state.name,
            "severity": state.severity,
            "status": state.severity,
            "count": state.count,
            "first_seen": _iso(state.first_seen),
            "last_seen": _iso(state.last_seen),
            "samples": "\n".join(f"> {s}" for s in state.samples),
        }

    def _labels(self, state: AlertState, own: Mapping[str, str]) -> dict[str, str]:
        """Automatic labels first (they survive the 50-label cut), then the rule's, then the global ones."""
        auto = {"host": self.host, "source": state.source}
        if state.kind == "log":
            auto["rule"] = state.name
            if state.fields.get("path"):
                auto["path"] = state.fields["path"]
        elif state.kind == "check":
            auto["check"] = state.name
        merged = {**auto, **own}
        for k, v in self.global_labels.items():
            merged.setdefault(k, v)
        return merged

    # --- checks --------------------------------------------------------------------------------------

    def on_check(self, check: Any, observation: Any, now: float) -> list[QueuedEvent]:
        """Apply one check observation (already through hysteresis and flap detection)."""
        fields = {k: str(v) for k, v in observation.fields.items()}
        key_values = {**self.global_labels, **check.labels, **fields, "host": self.host, "check": check.name}
        key = render(check.alert_key, key_values) if check.alert_key else stable_alert_key(
            self.host, "checks", check.name)
        state = self.states.get(key)
        status: Status = observation.status
        if state is None:
            if status == "Ok" and not observation.flapping:
                return []
            state = AlertState(key=key, kind="check", source="checks", name=check.name,
                               output=check.output or self.default_output,
                               repeat_interval=check.repeat_interval or 0.0)
            self.states[key] = state
        state.fields = fields
        state.last_seen = now
        title_t = check.title or "{check} on {host}: {summary}"
        desc_t = check.description or "{summary}\n\n{output}\n\nstatus: {raw_status}, perfdata: {perfdata}"

        def rerender(severity: Status) -> None:
            state.severity = severity
            values = self._values(state)
            state.title = render(title_t, values)
            state.description = render(desc_t, values)
            state.labels = self._labels(state, {k: render(v, values) for k, v in check.labels.items()})

        if observation.flapping_changed and observation.flapping:
            state.flapping = True
            if not state.firing:
                state.firing, state.first_seen, state.count = True, now, 0
            rerender("Warning" if status in ("Ok", "Info") else status)
            state.description = (f"Check is flapping; notifications are suppressed until it settles.\n\n"
                                 f"{state.description}")
            self._changed.add(key)
            return self._notify(state, state.severity, now)
        if observation.flapping:
            state.count += 1
            self._changed.add(key)
            return []
        state.flapping = False
        if status == "Ok":
            if not state.firing:
                del self.states[key]
                return []
            rerender(state.severity)
            return self._resolve(state, now, f"Recovered: {fields.get('summary', '')}")
        state.count += 1
        if state.firing and state.severity == status and state.notified:
            self._changed.add(key)
            return []
        if not state.firing:
            state.firing, state.first_seen = True, now
        rerender(status)
        self._changed.add(key)
        return self._notify(state, status, now)

    def _count_suppressed(self, reason: str, now: float) -> None:
        """Every suppressed event is counted by reason and feeds the storm-control summary."""
        self.stats.suppressed[reason] += 1
        self._storm_window.append((now, 1))

    def _over_capacity(self, key: str, rule: str, now: float) -> None:
        self._count_suppressed("max_open_alerts", now)
        self._capacity_unlogged += 1
        if now - self._capacity_logged >= 60:
            log.warning("alert_capacity_reached_new_alerts_suppressed", max_open_alerts=self.config.max_open_alerts,
                        suppressed=self._capacity_unlogged, example_alert_key=key, rule=rule)
            self._capacity_logged = now
            self._capacity_unlogged = 0

    def crowded(self) -> bool:
        """Half the alert capacity is in use: a log source should let due resolves catch up first."""
        return len(self.states) >= self.config.max_open_alerts // 2

    def next_quiet_resolve(self) -> float | None:
        """When the earliest quiet-period resolve falls due (O(n); only called while crowded)."""
        return min((s.last_seen + s.resolve_after for s in self.states.values()
                    if s.firing and s.resolve_after is not None), default=None)

    # --- time ---------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[QueuedEvent]:
        """Quiet-period resolves, reminders, delayed notifications and the storm summary."""
        out: list[QueuedEvent] = []
        for state in list(self.states.values()):
            if state.kind == "storm":
                continue
            if not state.firing:
                state.window = [t for t in state.window if t > now - 3600]
                if not state.window:
                    del self.states[state.key]
                continue
            if state.resolve_after is not None and now - state.last_seen >= state.resolve_after:
                out += self._resolve(state, now, f"Resolved: no matching line for {state.resolve_after:g}s")
            elif state.owed:
                out += self._notify(state, state.severity, now)  # storm control held it back earlier
            elif state.repeat_interval and now - state.last_notified >= state.repeat_interval and not state.flapping:
                if state.kind == "log":
                    state.description = self._refresh_description(state)
                out += self._notify(state, state.severity, now, reminder=True)
        out += self._storm_summary(now)
        return out

    def _refresh_description(self, state: AlertState) -> str:
        """Reminders carry the updated count (and so differ from the previous event, which the server
        would otherwise discard as identical)."""
        return f"{state.description.split(chr(10) + '[reminder]')[0]}\n[reminder] still firing: {state.count} " \
               f"matches since {_iso(state.first_seen)}, last {_iso(state.last_seen)}"

    def resolve_removed(self, alive: set[tuple[str, str]], now: float) -> list[QueuedEvent]:
        """Close open alerts whose rule/check is gone from the config (documented: removal resolves)."""
        out: list[QueuedEvent] = []
        for state in list(self.states.values()):
            if state.kind == "storm":
                continue
            if (state.source, state.name) not in alive:
                out += self._resolve(state, now, "Resolved: its rule or check was removed from the dutytail config")
        return out

    # --- sending --------------------------------------------------------------------------------------

    def _allowed(self, key: str, now: float) -> str | None:
        """None when storm control lets an event for ``key`` through, else the reason it does not."""
        sends = self._key_sends.get(key, [])
        del sends[: bisect.bisect_right(sends, now - 60)]  # send times are in order
        while self._global_sends and self._global_sends[0][0] <= now - 60:
            self._global_total -= self._global_sends.popleft()[1]
        if len(sends) >= self.config.max_events_per_key_per_minute:
            return "per_key_rate"
        if self._global_total >= self.config.max_events_per_minute:
            return "global_rate"
        return None

    def _notify(self, state: AlertState, status: Status, now: float, *, reminder: bool = False) -> list[QueuedEvent]:
        reason = self._allowed(state.key, now)
        if reason is not None:
            state.suppressed += 1
            self._count_suppressed(reason, now)
            if not reminder:
                state.owed = True
            return []
        description = state.description
        if state.suppressed:
            description += f"\n\n(suppressed {state.suppressed} event(s) for this alert by storm control)"
            state.suppressed = 0
        state.notified = True
        state.owed = False
        state.last_notified = now
        self._changed.add(state.key)
        return [self._event(state, status, state.title, description, now)]

    def _resolve(self, state: AlertState, now: float, why: str) -> list[QueuedEvent]:
        del self.states[state.key]
        self._removed.add(state.key)
        self._key_sends.pop(state.key, None)
        if not state.notified:
            self.stats.suppressed["resolved_before_notified"] += 1
            log.info("alert_resolved_before_notified", alert_key=state.key, rule=state.name)
            return []
        # An Ok is never held back: the alert would stay open forever on the other side.
        description = f"{why}\n\n{state.count} occurrence(s) from {_iso(state.first_seen)} to {_iso(state.last_seen)}"
        return [self._event(state, "Ok", state.title, description, now)]

    def _event(self, state: AlertState, status: Status, title: str, description: str, now: float) -> QueuedEvent:
        if status != "Ok" and state.kind != "storm":
            # a short list, not a deque: one per open alert, and a deque's 600 bytes added up in a backlog
            self._key_sends.setdefault(state.key, []).append(now)
            second = int(now)
            if self._global_sends and self._global_sends[-1][0] == second:
                self._global_sends[-1][1] += 1
            else:
                self._global_sends.append([second, 1])
            self._global_total += 1
        event = Event(title=title, status=status, alert_key=state.key, description=description,
                      labels=state.labels, event_time=int(now))
        body = event.to_body()
        if event.adjustments:
            log.info("event_adjusted_to_protocol_limits", alert_key=state.key, adjustments=event.adjustments)
        self.stats.events[status] += 1
        return QueuedEvent(output=state.output, alert_key=body["alert_key"], body=body)

    def _storm_summary(self, now: float) -> list[QueuedEvent]:
        while self._storm_window and self._storm_window[0][0] <= now - 60:
            self._storm_window.popleft()
        suppressed = sum(n for _, n in self._storm_window)
        state = self.states.get(self._storm_key)
        if suppressed and (state is None or (now - state.last_notified >= 60 and state.count != suppressed)):
            if state is None:
                state = AlertState(key=self._storm_key, kind="storm", source="dutytail", name="storm-control",
                                   output=self.default_output, severity="Warning", firing=True, first_seen=now)
                self.states[self._storm_key] = state
            state.count = suppressed
            state.last_seen = now
            state.title = f"dutytail storm control on {self.host}: events suppressed"
            state.labels = self._labels(state, {"rule": "storm-control"})
            state.notified = True
            state.last_notified = now
            self._changed.add(state.key)
            description = (f"dutytail suppressed {suppressed} event(s) in the last minute on {self.host} "
                           f"(caps: {self.config.max_events_per_key_per_minute}/min per alert, "
                           f"{self.config.max_events_per_minute}/min in all, {self.config.max_open_alerts} open "
                           f"alerts). See dutytail_events_suppressed_total.")
            return [self._event(state, "Warning", state.title, description, now)]
        if not suppressed and state is not None and now - state.last_seen >= 60:
            return self._resolve(state, now, "Storm control: nothing suppressed in the last minute")
        return []


def hit_events(engine: AlertEngine, source: str, rules: Sequence[RuleLike], path: str,
               hits: Sequence[Any], now: float) -> list[QueuedEvent]:
    """Feed a batch's rule hits (``agent.rules.Hit``) to the engine, in line order."""
    out: list[QueuedEvent] = []
    for hit in hits:
        rule = rules[hit.rule]
        if hit.kind == "fire":
            out += engine.on_match(source, rule, path, hit.line, hit.groups, now)
        else:
            out += engine.on_resolve_match(source, rule, path, hit.line, hit.groups, now)
    return out
