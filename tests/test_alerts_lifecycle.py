"""The time rules every alert follows (``lifecycle.due``), on bare states."""

from __future__ import annotations

from agent.alerts import AlertState, Resolve
from agent.alerts.lifecycle import due
from tests.alerts_helpers import T0


def state(**fields: object) -> AlertState:
    return AlertState(**{"key": "k", "kind": "log", "source": "app", "name": "db", "output": "o", **fields})


def steps(states: list[AlertState], now: float) -> list[object]:
    return [step for _, step in due(states, now)]


def test_a_pending_window_ages_out_after_an_hour_without_a_match() -> None:
    pending = state(window=[T0, T0 + 100])
    assert steps([pending], T0 + 3600) == [] and pending.window == [T0 + 100]
    assert steps([pending], T0 + 3700) == ["forget"]


def test_quiet_period_first_then_a_held_back_update_then_a_reminder() -> None:
    quiet = state(firing=True, last_seen=T0, resolve_after=30.0, owed=True, repeat_interval=10.0)
    assert steps([quiet], T0 + 29) == ["retry"]
    assert steps([quiet], T0 + 30) == [Resolve("Resolved: no matching line for 30s")]
    reminding = state(firing=True, last_notified=T0, repeat_interval=10.0)
    assert steps([reminding], T0 + 9) == [] and steps([reminding], T0 + 10) == ["remind"]
    reminding.flapping = True
    assert steps([reminding], T0 + 10) == []  # never while flapping


def test_the_storm_control_alert_keeps_its_own_time() -> None:
    storm = state(kind="storm", firing=True, last_seen=T0, resolve_after=1.0, repeat_interval=1.0)
    assert steps([storm], T0 + 100) == []


def test_steps_are_reported_in_state_order() -> None:
    a, b = state(key="a", window=[T0]), state(key="b", firing=True, owed=True)
    assert [(s.key, step) for s, step in due([a, b], T0 + 4000)] == [("a", "forget"), ("b", "retry")]
