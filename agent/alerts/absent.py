"""The lifecycle of an ``absent`` rule: it fires when no line has matched for ``absent.after``.

The clock starts when the rule starts (first start, a reload that adds it, a restart without a stored
state) and restarts at every matching line; the last-seen time is persisted with the state, so a silence
that spans a restart is caught at the moment it would have been without the restart. With ``identity``,
each identity seen is watched on its own (a worker that stops logging, by name); without it, one state is
made when the rule starts (``engine.watch_rules``). A matching line closes a firing alert with an ``Ok``.

A due deadline fires only while the source is not behind (``silence.SourceView``): a backlog being read,
batches still being matched or a first scan still running may hold the line that answers.
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

DEFAULT_DESCRIPTION = "{rule} on {host}"


def new_state(key: str, source: str, rule: RuleLike, default_output: str, started: float) -> AlertState:
    """A watched identity whose clock starts at ``started`` (``first_seen``: since when it is watched)."""
    wait = rule.absent.after
    return AlertState(key=key, kind="absent", source=source, name=rule.name, output=rule.output or default_output,
                      severity=rule.severity, first_seen=started, wait=wait, deadline=started + wait,
                      repeat_interval=rule.repeat_interval)


def rewatch(state: AlertState, rule: RuleLike, started: float) -> None:
    """The rule is (re)started with a state already there (reload, restart): keep its clock, take the
    rule's current ``after``."""
    state.wait = rule.absent.after
    state.repeat_interval = rule.repeat_interval
    state.output = rule.output or state.output
    if not state.firing:
        state.deadline = max(state.last_seen, state.first_seen or started) + state.wait


def seen(state: AlertState, path: str, line: str, groups: Mapping[str, str], at: float) -> Step:
    """A matching line seen at ``at`` (``silence.seen_at``): the clock restarts; a firing alert closes."""
    silent = at - max(state.last_seen, state.first_seen)
    state.last_seen = at
    state.count += 1
    state.fields = {**{k: str(v)[:FIELD_MAX] for k, v in groups.items()}, "line": line[:LINE_MAX], "path": path}
    state.deadline = at + state.wait
    state.held_since = 0.0
    if state.firing:
        return Resolve(f"A matching line arrived after {format_duration(silent)} of silence: {line[:LINE_MAX]}")
    return "persist"


def overdue(state: AlertState, rule: RuleLike, view: SourceView, now: float, renderer: Renderer) -> Step:
    """The deadline has passed: fire, unless the source is behind (then wait, up to a bound)."""
    wait_more, state.held_since = held(state.held_since, view, now, state.wait)
    if wait_more:
        return "nothing"
    since = max(state.last_seen, state.first_seen)
    silent = format_duration(now - since)
    what = f"No line matching the rule for {silent}"
    what += f" (the last one at {iso(state.last_seen)})." if state.last_seen else f" (watched since {iso(since)})."
    why = view.why
    if view.behind:
        why = f"the agent is behind reading it{': ' + why if why else ''}"
    state.firing = True
    state.severity = rule.severity
    state.fields = {**state.fields, "silent_for": silent, "why": why or "-"}
    values = renderer.values(state)
    state.title = render(rule.title, values)
    parts = [what]
    if why:
        parts.append(f"Why: {why}.")
    if rule.given("description"):
        parts.append(render(rule.description, values))
    parts.append(f"Pattern: {rule.summary()}")
    state.description = "\n\n".join(parts)
    state.labels = renderer.labels(state, identity_labels(rule, state.fields, values))
    return "fire"


def before_reminder(state: AlertState, now: float) -> None:
    since = max(state.last_seen, state.first_seen)
    state.description = f"{state.description.split(chr(10) + '[reminder]')[0]}\n[reminder] still silent: " \
                        f"{format_duration(now - since)} since {iso(since)}"
