"""The persisted form of an alert state: what is stored, and a row from another release still loads."""

from __future__ import annotations

import json

from agent.alerts import AlertState


def test_a_state_round_trips_without_its_pending_window_and_samples() -> None:
    state = AlertState(key="k", kind="log", source="app", name="db", output="default", firing=True, count=3,
                       labels={"a": "b"}, fields={"line": "x"}, window=[1.0], samples=["x"], resolve_after=60.0)
    stored = json.loads(state.to_json())
    assert "window" not in stored and "samples" not in stored
    back = AlertState.from_json(state.to_json())
    assert back.window == [] and back.samples == []
    assert (back.key, back.firing, back.count, back.labels, back.fields, back.resolve_after) == (
        "k", True, 3, {"a": "b"}, {"line": "x"}, 60.0)


def test_a_row_from_another_release_loads_the_fields_this_one_knows() -> None:
    text = json.dumps({"key": "k", "kind": "check", "source": "checks", "name": "api", "output": "o",
                       "severity": "Critical", "retired_field": 1})
    state = AlertState.from_json(text)
    assert (state.kind, state.severity, state.firing) == ("check", "Critical", False)
