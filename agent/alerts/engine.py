"""The alert engine: owns every alert state and carries out what the lifecycles decide.

Inputs arrive here (rule hits, check observations, the ticker's clock) and are routed to the lifecycle
of their kind (``log_rule``, ``check``), which updates one state and answers with a ``Step``. The engine
carries the step out in one place for every kind: storm control, the event, the state change to persist,
forgetting. It also bounds how many alerts are tracked at once (``max_open_alerts``).

States live in memory and every change is handed out (``commit``, ``take_changes``) to be committed in the
same SQLite transaction as the events it produced, so an alert opened before a restart still gets its
``Ok`` after it. The clock is injected: the agent passes wall time, ``dutytail test-rule`` passes time read
from the log. All methods run on the event loop (no locking needed).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from agent.alerts import absent, expect, lifecycle, log_rule, self_alert
from agent.alerts import check as check_alert
from agent.alerts.config import AlertsConfig
from agent.alerts.lifecycle import Resolve, Step
from agent.alerts.log_rule import RuleLike
from agent.alerts.render import Renderer, build_event, iso
from agent.alerts.self_alert import SelfObservation
from agent.alerts.silence import SourceLook
from agent.alerts.state import TIMED_KINDS, AlertState, EngineStats, Kind
from agent.alerts.storm import StormControl
from agent.alerts.timers import TimedRules
from agent.events import Status
from agent.outbox import Commit, QueuedEvent

if TYPE_CHECKING:
    from agent.checks import CheckConfig, CheckObservation

log = structlog.get_logger(__name__)


# what a kind of alert does before a reminder goes out (time itself treats every kind alike: lifecycle.due)
_BEFORE_REMINDER: dict[Kind, Callable[[AlertState, float], None]] = {
    "log": log_rule.before_reminder, "absent": absent.before_reminder, "expect": expect.before_reminder}


class AlertEngine:
    """Owns every alert's state; all methods run on the event loop (no locking needed)."""

    # slots: settings are changed with reconfigure(); a stray `engine.host = ...` fails instead of doing nothing
    __slots__ = ("_changed", "_config", "_default_output", "_removed",
                 "_render", "_storm", "_timed", "states", "stats")

    def __init__(self, config: AlertsConfig, *, host: str, global_labels: Mapping[str, str],
                 default_output: str, line_clock: bool = True) -> None:
        """``line_clock``: timed rules judge a line by the time it says it was written (off in a replay,
        whose clock already is the lines' time)."""
        self._timed = TimedRules(line_clock=line_clock)
        self._config = config
        self._default_output = default_output
        self._render = Renderer(host, global_labels)
        self.states: dict[str, AlertState] = {}
        self.stats = EngineStats()
        self._storm = StormControl(config, self.stats, host)
        self._changed: set[str] = set()
        self._removed: set[str] = set()

    def set_source_look(self, look: SourceLook) -> None:
        """How the engine asks whether a source is behind before an absence or a late finish fires."""
        self._timed.look = look

    def reconfigure(self, config: AlertsConfig, *, host: str, global_labels: Mapping[str, str],
                    default_output: str) -> None:
        """A reloaded config: new caps, labels and default output apply from the next event on. Open
        alerts keep what they were rendered with; the storm-control alert keeps its key."""
        self._config = self._storm.config = config
        self._render.host = host
        self._render.global_labels = dict(global_labels)
        self._default_output = default_output

    @property
    def config(self) -> AlertsConfig:
        """Read-only: ``reconfigure`` swaps it, together with the parts that hold it."""
        return self._config

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
        states = self.states
        upserts = [(k, states[k].to_json()) for k in self._changed
                   if k in states and (states[k].firing or states[k].kind in TIMED_KINDS)]
        removed = list(self._removed | {k for k in self._changed if k not in self.states})
        self._changed.clear()
        self._removed.clear()
        return upserts, removed

    def has_changes(self) -> bool:
        return bool(self._changed or self._removed)

    def commit(self, events: list[QueuedEvent]) -> Commit:
        """An outbox commit of ``events`` with the state changes pending since the last one (``take_changes``):
        committed together, an event and the state that produced it are durable at once."""
        upserts, removed = self.take_changes()
        return Commit(events=events, alerts=upserts, forget_alerts=removed)

    def open_alerts(self) -> list[dict[str, Any]]:
        return [
            {"alert_key": s.key, "kind": s.kind, "source": s.source, "name": s.name, "severity": s.severity,
             "count": s.count, "first_seen": s.first_seen, "last_seen": s.last_seen, "notified": s.notified,
             "flapping": s.flapping}
            for s in self.states.values() if s.firing
        ]

    # --- inputs --------------------------------------------------------------------------------------

    def rule_alert_key(self, source: str, rule: RuleLike, groups: Mapping[str, str], path: str) -> str:
        return log_rule.alert_key(source, rule, groups, path, self._render)

    def on_match(self, source: str, rule: RuleLike, path: str, line: str, groups: Mapping[str, str],
                 now: float) -> list[QueuedEvent]:
        self.stats.matches[f"{source}/{rule.name}"] += 1
        key = log_rule.alert_key(source, rule, groups, path, self._render)
        state = self.states.get(key)
        kind = rule.kind
        if state is None:
            if len(self.states) >= self._config.max_open_alerts:
                self._storm.over_capacity(key, rule.name, now)
                return []
            if kind == "match":
                state = log_rule.new_state(key, source, rule, self._default_output, self._config.default_resolve_after)
            elif kind == "absent":
                state = absent.new_state(key, source, rule, self._default_output, now)
            else:
                state = expect.new_state(key, source, rule, self._default_output)
            self.states[key] = state
        if kind == "match":
            return self._apply(state, log_rule.match(state, rule, path, line, groups, now, self._render), now)
        if kind == "absent":
            at = self._timed.seen_at(line, now, state.last_seen, rule.absent.after)
            return self._apply(state, absent.seen(state, path, line, groups, at), now)
        at = self._timed.seen_at(line, now, 0.0, rule.expect.within)
        return self._apply(state, expect.started(state, rule, path, line, groups, at), now)

    def on_resolve_match(self, source: str, rule: RuleLike, path: str, line: str, groups: Mapping[str, str],
                         now: float) -> list[QueuedEvent]:
        state = self.states.get(log_rule.alert_key(source, rule, groups, path, self._render))
        if state is None:
            return []
        if state.kind == "expect":
            at = self._timed.seen_at(line, now, 0.0, state.wait)
            return self._apply(state, expect.finished(state, line, at), now)
        return self._apply(state, log_rule.recovered(state, line), now)

    def watch_rules(self, source: str, rules: Sequence[RuleLike], now: float) -> list[QueuedEvent]:
        """A source's rules (re)start (start, reload, restart): ``absent`` rules without ``identity`` get their
        state (the clock starts now unless a stored one is kept), timed states take the rule's current wait,
        and states left from a rule of another kind under the same name are closed."""
        self._timed.register(source, rules)
        out: list[QueuedEvent] = []
        by_name = {rule.name: rule for rule in rules}
        for state in list(self.states.values()):
            if state.source != source or state.kind in ("storm", "self", "check"):
                continue
            rule = by_name.get(state.name)
            if rule is None:
                continue  # resolve_removed closes it
            expected: Kind = "log" if rule.kind == "match" else rule.kind
            if state.kind != expected:
                out += self._resolve(state, now, "Resolved: its rule changed kind in the dutytail config")
            elif state.kind in TIMED_KINDS:
                (absent if state.kind == "absent" else expect).rewatch(state, rule, now)
                self._changed.add(state.key)
        for rule in rules:
            if rule.kind == "absent" and not rule.identity:
                key = log_rule.alert_key(source, rule, {}, "", self._render)
                if key not in self.states:
                    self.states[key] = absent.new_state(key, source, rule, self._default_output, now)
                    self._changed.add(key)
        return out

    def on_self(self, observation: SelfObservation, *, output: str, severity: Status,
                now: float) -> list[QueuedEvent]:
        """One look at one of the agent's own conditions (``agent.selfwatch``)."""
        key = self_alert.alert_key(self._render.host, observation)
        state = self.states.get(key)
        if state is None:
            if not observation.active:
                return []
            state = self.states[key] = self_alert.new_state(key, observation, output, severity)
        labels = self._render.labels(state, {"condition": observation.condition, "object": observation.object})
        return self._apply(state, self_alert.observe(state, observation, now, labels), now)

    def self_states(self) -> list[AlertState]:
        return [s for s in self.states.values() if s.kind == "self"]

    def on_check(self, check: CheckConfig, observation: CheckObservation, now: float) -> list[QueuedEvent]:
        """Apply one check observation (already through hysteresis and flap detection)."""
        fields = {k: str(v) for k, v in observation.fields.items()}
        key = check_alert.alert_key(check, fields, self._render)
        state = self.states.get(key)
        if state is None:
            if not check_alert.opens(observation):
                return []
            state = self.states[key] = check_alert.new_state(key, check, self._default_output)
        return self._apply(state, check_alert.observe(state, check, observation, fields, now, self._render), now)

    def tick(self, now: float) -> list[QueuedEvent]:
        """Quiet-period resolves, reminders, delayed notifications and the storm summary."""
        out: list[QueuedEvent] = []
        with self._timed.tick():  # one look per source and tick, however many timers fall due
            for state, step in lifecycle.due(list(self.states.values()), now):
                out += self._apply(state, step, now)
        out += self._storm_summary(now)
        return out

    def resolve_removed(self, alive: set[tuple[str, str]], now: float) -> list[QueuedEvent]:
        """Close open alerts whose rule/check is gone from the config (documented: removal resolves)."""
        out: list[QueuedEvent] = []
        self._timed.keep_only(alive)
        for state in list(self.states.values()):
            if state.kind in ("storm", "self"):
                continue
            if (state.source, state.name) not in alive:
                out += self._resolve(state, now, "Resolved: its rule or check was removed from the dutytail config")
        return out

    # --- capacity ------------------------------------------------------------------------------------

    def crowded(self) -> bool:
        """Half the alert capacity is in use: a log source should let due resolves catch up first."""
        return len(self.states) >= self._config.max_open_alerts // 2

    def next_quiet_resolve(self) -> float | None:
        """When the earliest quiet-period resolve falls due (O(n); only called while crowded)."""
        return min((s.last_seen + s.resolve_after for s in self.states.values()
                    if s.firing and s.resolve_after is not None), default=None)

    # --- carrying out a step -------------------------------------------------------------------------

    def _apply(self, state: AlertState, step: Step, now: float) -> list[QueuedEvent]:
        # most frequent first: an open alert counting another match, a new alert, a resolve
        if step == "persist":
            self._changed.add(state.key)
            return []
        if step == "fire":
            self._changed.add(state.key)
            return self._notify(state, now)
        if type(step) is Resolve:
            return self._resolve(state, now, step.why, keep=state.kind == "absent")
        if step == "nothing":
            return []
        if step == "retry":
            return self._notify(state, now)
        if step == "remind":
            before = _BEFORE_REMINDER.get(state.kind)
            if before is not None:
                before(state, now)
            return self._notify(state, now, reminder=True)
        if step == "forget":
            del self.states[state.key]
            self._removed.add(state.key)  # a timed state was persisted while pending
            return []
        if step == "overdue":
            return self._overdue(state, now)
        raise AssertionError(f"unknown step {step!r}")  # pragma: no cover

    def _overdue(self, state: AlertState, now: float) -> list[QueuedEvent]:
        rule = self._timed.rule(state.source, state.name)
        if rule is None:
            return []
        view = self._timed.view(state.source)
        if state.kind == "absent":
            return self._apply(state, absent.overdue(state, rule, view, now, self._render), now)
        return self._apply(state, expect.overdue(state, rule, view, now, self._render), now)

    def _notify(self, state: AlertState, now: float, *, reminder: bool = False) -> list[QueuedEvent]:
        """Send the state's severity, title and description, unless storm control holds it back."""
        reason = self._storm.allowed(state.key, now)
        if reason is not None:
            state.suppressed += 1
            self._storm.suppressed(reason, now)
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
        return [self._event(state, state.severity, state.title, description, now)]

    def _resolve(self, state: AlertState, now: float, why: str, *, keep: bool = False) -> list[QueuedEvent]:
        """Close the alert (an Ok if the server has it open). ``keep``: an absence rule's state stays, its
        clock running again from the line that closed it."""
        self._storm.forget(state.key)
        if keep:
            notified = state.notified
            state.firing = state.notified = state.owed = False
            state.suppressed = 0
            self._changed.add(state.key)
            return [self._event(state, "Ok", state.title, why, now)] if notified else []
        del self.states[state.key]
        self._removed.add(state.key)
        if not state.notified:
            if state.firing:  # timed states wait unnoticed: closing one that never fired is not news
                self.stats.suppressed["resolved_before_notified"] += 1
                log.info("alert_resolved_before_notified", alert_key=state.key, rule=state.name)
            return []
        # An Ok is never held back: the alert would stay open forever on the other side.
        description = why
        if state.kind in ("log", "check"):
            description += f"\n\n{state.count} occurrence(s) from {iso(state.first_seen)} to {iso(state.last_seen)}"
        return [self._event(state, "Ok", state.title, description, now)]

    def _event(self, state: AlertState, status: Status, title: str, description: str, now: float) -> QueuedEvent:
        if status != "Ok" and state.kind != "storm":
            self._storm.sent(state.key, now)
        event = build_event(state, status, title, description, now)
        self.stats.events[status] += 1
        return event

    def _storm_summary(self, now: float) -> list[QueuedEvent]:
        state = self.states.get(self._storm.key)
        due = self._storm.summary(state, now, self._render, self._default_output)
        if due is None:
            return []
        if isinstance(due, Resolve):
            assert state is not None  # only an open storm-control alert resolves
            return self._resolve(state, now, due.why)
        state = self.states[due.state.key] = due.state
        self._changed.add(state.key)
        return [self._event(state, "Warning", state.title, due.description, now)]


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
