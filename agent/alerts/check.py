"""The lifecycle of a check's alert: a bad status opens it, a severity change updates it, Ok closes it.

Hysteresis and flap detection have already been applied upstream (``agent.checks``), so each observation
is a status to act on as it is. What is left here is the alert side: an unchanged bad status is counted
but not sent again (reminders, per ``repeat_interval``, repeat the last rendered description; see
``lifecycle.due``); a check that starts flapping sends one Warning saying notifications are off, and is
then only counted until it settles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.alerts.lifecycle import Resolve, Step
from agent.alerts.render import Renderer
from agent.alerts.state import AlertState
from agent.events import Status, render, stable_alert_key

if TYPE_CHECKING:
    from agent.checks import CheckConfig, CheckObservation

DEFAULT_TITLE = "{check} on {host}: {summary}"
DEFAULT_DESCRIPTION = "{summary}\n\n{output}\n\nstatus: {raw_status}, perfdata: {perfdata}"
FLAPPING_NOTE = "Check is flapping; notifications are suppressed until it settles."


def alert_key(check: CheckConfig, fields: dict[str, str], renderer: Renderer) -> str:
    """The check's ``alert_key`` template over its result fields, else one alert per check and host."""
    def default() -> str:
        return stable_alert_key(renderer.host, "checks", check.name)

    if check.alert_key:
        values = {**renderer.global_labels, **check.labels, **fields, "host": renderer.host, "check": check.name}
        return renderer.alert_key(check.alert_key, values, default, f"checks/{check.name}")
    return default()


def opens(observation: CheckObservation) -> bool:
    """Whether an observation for an identity without a state needs one (a steady Ok does not)."""
    return observation.status != "Ok" or observation.flapping


def new_state(key: str, check: CheckConfig, default_output: str) -> AlertState:
    return AlertState(key=key, kind="check", source="checks", name=check.name,
                      output=check.output or default_output, repeat_interval=check.repeat_interval or 0.0)


def observe(state: AlertState, check: CheckConfig, observation: CheckObservation, fields: dict[str, str],
            now: float, renderer: Renderer) -> Step:
    """Apply one observation; ``fields`` are its template fields as strings (they also made the key)."""
    status: Status = observation.status
    state.fields = fields
    state.last_seen = now
    if observation.flapping_changed and observation.flapping:
        state.flapping = True
        if not state.firing:
            state.firing, state.first_seen, state.count = True, now, 0
        _render(state, check, "Warning" if status in ("Ok", "Info") else status, renderer)
        state.description = f"{FLAPPING_NOTE}\n\n{state.description}"
        return "fire"
    if observation.flapping:
        state.count += 1
        return "persist"
    state.flapping = False
    if status == "Ok":
        if not state.firing:
            return "forget"
        _render(state, check, state.severity, renderer)
        return Resolve(f"Recovered: {fields.get('summary', '')}")
    state.count += 1
    if state.firing and state.severity == status and state.notified:
        return "persist"
    if not state.firing:
        state.firing, state.first_seen = True, now
    _render(state, check, status, renderer)
    return "fire"


def _render(state: AlertState, check: CheckConfig, severity: Status, renderer: Renderer) -> None:
    state.severity = severity
    values = renderer.values(state)
    state.title = render(check.title or DEFAULT_TITLE, values)
    state.description = render(check.description or DEFAULT_DESCRIPTION, values)
    state.labels = renderer.labels(state, {k: render(v, values) for k, v in check.labels.items()})
