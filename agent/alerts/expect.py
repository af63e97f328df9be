"""The lifecycle of an ``expect`` rule: after a start line, a finish line must follow within ``within``.

A line matching the rule starts a wait for its identity (``identity`` pairs a start with its finish); a
line matching ``expect.match`` with the same identity ends it. On time, nothing is sent. When the wait
runs out the rule fires; a finish arriving later closes the alert with an ``Ok``. A repeated start before
the finish restarts the wait (the later run is the one waited for); while the alert is open a new start
changes nothing (the finish still closes it). Pending waits are persisted, so they survive restarts and
reloads; a rule removed by a reload drops them.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.alerts.lifecycle import Resolve, Step
from agent.alerts.log_rule import FIELD_MAX, LINE_MAX, RuleLike, identity_labels
from agent.alerts.render import Renderer, iso
from agent.alerts.silence import SourceView, held
from agent.alerts.state import AlertState
from agent.events import render
from agent.units import format_duration


def new_state(key: str, source: str, rule: RuleLike, default_output: str) -> AlertState:
    return AlertState(key=key, kind="expect", source=source, name=rule.name, output=rule.output or default_output,
                      severity=rule.severity, wait=rule.expect.within, repeat_interval=rule.repeat_interval)


def rewatch(state: AlertState, rule: RuleLike, started: float) -> None:
    """The rule is (re)started with a pending wait (reload, restart): its current ``within`` applies."""
    if not state.firing and state.wait != rule.expect.within:
        state.wait = rule.expect.within
        state.deadline = state.first_seen + state.wait


def started(state: AlertState, rule: RuleLike, path: str, line: str, groups: Mapping[str, str],
            at: float) -> Step:
    """A start line seen at ``at`` (``silence.seen_at``): the wait (re)starts, unless the alert is open."""
    state.count += 1
    if state.firing:
        return "nothing"
    state.first_seen = state.last_seen = at
    state.wait = rule.expect.within
    state.deadline = at + state.wait
    state.held_since = 0.0
    state.fields = {**{k: str(v)[:FIELD_MAX] for k, v in groups.items()}, "line": line[:LINE_MAX], "path": path}
    return "persist"


def finished(state: AlertState, line: str, at: float) -> Step:
    """The finish line, seen at ``at``: on time nothing is sent; late, the open alert closes."""
    if not state.firing:
        return "forget"
    took = format_duration(at - state.first_seen)
    return Resolve(f"Finished after {took} (expected within {format_duration(state.wait)}): {line[:LINE_MAX]}")


def overdue(state: AlertState, rule: RuleLike, view: SourceView, now: float, renderer: Renderer) -> Step:
    """The wait ran out: fire, unless the source is behind (the finish may be unread yet)."""
    wait_more, state.held_since = held(state.held_since, view, now, state.wait)
    if wait_more:
        return "nothing"
    late = format_duration(now - state.first_seen)
    why = f"the agent is behind reading the source{': ' + view.why if view.why else ''}" if view.behind else view.why
    state.firing = True
    state.severity = rule.severity
    state.fields = {**state.fields, "silent_for": late, "why": why or "-"}
    values = renderer.values(state)
    state.title = render(rule.title, values)
    parts = [f"Started at {iso(state.first_seen)} and not finished within {format_duration(state.wait)} "
             f"(started {late} ago): no line matching '{rule.expect.match}' yet.",
             f"Start: {state.fields.get('line', '')}"]
    if why:
        parts.append(f"Why: {why}.")
    if rule.given("description"):
        parts.append(render(rule.description, values))
    state.description = "\n\n".join(parts)
    state.labels = renderer.labels(state, identity_labels(rule, state.fields, values))
    return "fire"


def before_reminder(state: AlertState, now: float) -> None:
    state.description = f"{state.description.split(chr(10) + '[reminder]')[0]}\n[reminder] still not finished: " \
                        f"started {format_duration(now - state.first_seen)} ago"
