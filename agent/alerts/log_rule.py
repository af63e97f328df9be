"""The lifecycle of a log rule's alert: matches open it, a recovery line or a quiet period closes it.

A log that repeats one error 10,000 times is one alert: the matches of one identity (the rule's
``identity`` groups, or its ``alert_key`` template) collect in a pending window until ``threshold.count``
of them fall within ``threshold.within``; then it fires, and later matches only count. It resolves on a
matching ``resolve.match`` line of the same identity, or after ``resolve.after`` without a match (the
config's ``default_resolve_after`` when the rule sets neither; ``lifecycle.due``). Reminders carry the
updated count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from agent.alerts.lifecycle import Resolve, Step
from agent.alerts.render import Renderer, iso
from agent.alerts.state import AlertState
from agent.events import render, stable_alert_key

FIELD_MAX = 1000  # characters kept of a named group's value
LINE_MAX = 2000  # ... of the matched line (the {line} field)
SAMPLE_MAX = 500  # ... of each line kept for {samples}
RECOVERY_MAX = 1000  # ... of the recovery line quoted in the Ok


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

    def given(self, key: str) -> bool:
        """Whether the config set ``key`` (a default ``description`` is replaced for absent/expect rules)."""

    @property
    def threshold(self) -> Any: ...

    @property
    def resolve(self) -> Any: ...

    @property
    def absent(self) -> Any: ...

    @property
    def expect(self) -> Any: ...

    @property
    def kind(self) -> Literal["match", "absent", "expect"]: ...

    def pattern(self) -> str | None: ...

    def summary(self) -> str: ...


def alert_key(source: str, rule: RuleLike, groups: Mapping[str, str], path: str, renderer: Renderer) -> str:
    """The identity of a match: the rule's ``alert_key`` template, else a hash of host, source, rule and
    the ``identity`` groups (so counts, times and the rest of the line never split an alert)."""
    def default() -> str:
        identity = [f"{name}={groups.get(name, '')}" for name in rule.identity]
        return stable_alert_key(renderer.host, source, rule.name, *identity)

    if rule.alert_key:
        values = {**renderer.global_labels, **rule.labels, **groups, "host": renderer.host, "source": source,
                  "rule": rule.name, "path": path}
        return renderer.alert_key(rule.alert_key, values, default, f"{source}/{rule.name}")
    return default()


def new_state(key: str, source: str, rule: RuleLike, default_output: str, default_resolve_after: float) -> AlertState:
    """A pending alert for a new identity; the quiet period is fixed now, so a rule edit cannot strand it."""
    resolve_after = rule.resolve.after
    if resolve_after is None and rule.resolve.match is None:
        resolve_after = default_resolve_after
    return AlertState(key=key, kind="log", source=source, name=rule.name, output=rule.output or default_output,
                      severity=rule.severity, max_samples=rule.samples, resolve_after=resolve_after,
                      repeat_interval=rule.repeat_interval)


def match(state: AlertState, rule: RuleLike, path: str, line: str, groups: Mapping[str, str], now: float,
          renderer: Renderer) -> Step:
    """A matching line: count it if the alert is open, else add it to the pending window and fire once the
    threshold is reached (the window is ``(now - within, now]``)."""
    # bounded: a 64 KiB line must not make every persisted alert state 64 KiB
    fields = {k: str(v)[:FIELD_MAX] for k, v in groups.items()}
    fields["line"] = line[:LINE_MAX]
    fields["path"] = path
    state.fields = fields
    state.last_seen = now
    if rule.samples:
        state.samples.append(line[:SAMPLE_MAX])
        del state.samples[: -rule.samples]
    if state.firing:
        state.count += 1
        return "persist"
    within = rule.threshold.within
    state.window.append(now)
    state.window = [t for t in state.window if t > now - within]
    if len(state.window) < rule.threshold.count:
        return "nothing"  # pending: not enough matches in the window yet
    state.firing = True
    state.first_seen = state.window[0]
    state.count = len(state.window)
    state.window = []
    state.severity = rule.severity
    values = renderer.values(state)
    state.title = render(rule.title, values)
    state.description = render(rule.description, values)
    state.labels = renderer.labels(state, identity_labels(rule, fields, values))
    return "fire"


def identity_labels(rule: RuleLike, fields: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, str]:
    """The rule's labels rendered, and its identity groups as labels (over a rule label of the same name); an
    identity field path names its label with underscores (``req.path`` -> ``req_path``, the form Flashduty's
    label keys take)."""
    own = {k: render(v, values) for k, v in rule.labels.items()}
    for name in rule.identity:
        own[name.replace(".", "_")] = fields.get(name, "")
    return own


def recovered(state: AlertState, line: str) -> Step:
    """A recovery line of the same identity: resolve an open alert, cancel a pending window."""
    if not state.firing:
        return "forget"
    return Resolve(f"Recovered: {line[:RECOVERY_MAX]}")


def before_reminder(state: AlertState, now: float) -> None:
    """Reminders carry the updated count (and so differ from the previous event, which the server
    would otherwise discard as identical)."""
    state.description = f"{state.description.split(chr(10) + '[reminder]')[0]}\n[reminder] still firing: " \
                        f"{state.count} matches since {iso(state.first_seen)}, last {iso(state.last_seen)}"
