"""The lifecycle of a self alert: the agent's own blind spots (a file it cannot read, data it lost ...).

Each condition about one object (a path, a source, an output) is one alert with a stable key. Two shapes:

* a *state* (a file unreadable, a source behind, dead letters waiting): it fires while the condition holds
  and resolves with an ``Ok`` when the watcher (``agent.selfwatch``) sees it clear;
* an *incident* (data lost, events dropped): each occurrence fires or refreshes it, and it resolves after
  a quiet period without another (``resolve_after``, so a restart keeps the clock).

The watcher decides when a condition counts (how long it must hold); this module only turns observations
into steps, like every other lifecycle, so storm control, pacing and the outbox apply to self alerts too.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.alerts.lifecycle import Resolve, Step
from agent.alerts.state import AlertState
from agent.events import Status, stable_alert_key

SOURCE = "dutytail"  # the ``source`` of every self alert state (and the label ``source``)


@dataclass(frozen=True, slots=True)
class SelfObservation:
    condition: str
    """What is wrong, a stable name (``file_unreadable``, ``data_lost`` ...): part of the alert key."""
    object: str
    """What it is wrong with (a path, a source, an output): part of the alert key."""
    active: bool
    title: str = ""
    description: str = ""
    incident: float | None = None
    """For incidents: the quiet period after which it resolves without another occurrence."""
    cleared: str = ""
    """Why it resolved, for the ``Ok`` (a state that cleared)."""


def alert_key(host: str, observation: SelfObservation) -> str:
    return stable_alert_key(host, SOURCE, observation.condition, observation.object)


def new_state(key: str, observation: SelfObservation, output: str, severity: Status) -> AlertState:
    return AlertState(key=key, kind="self", source=SOURCE, name=observation.condition, output=output,
                      severity=severity, resolve_after=observation.incident)


def observe(state: AlertState, observation: SelfObservation, now: float, labels: dict[str, str]) -> Step:
    if not observation.active:
        if not state.firing:
            return "forget"
        return Resolve(observation.cleared or "Resolved: the condition cleared")
    state.last_seen = now
    state.count += 1
    state.fields = {"object": observation.object, "cleared": observation.cleared}
    changed = state.description != observation.description
    state.title, state.description = observation.title, observation.description
    if state.firing:
        # an incident that happens again, or a state whose details changed: persisted, not sent again
        # (storm control would hold a stream of updates anyway; the Ok carries the count)
        return "persist" if changed or observation.incident else "nothing"
    state.firing = True
    state.first_seen = now
    state.labels = labels
    return "fire"
