"""The event body and templates: field paths only (no Python internals), bounded, no control characters."""

from __future__ import annotations

import pytest

from agent.events import FIELD_MAX, Event, render, template_fields, validate_template


def test_fields_and_dotted_paths_render_and_missing_ones_stay_visible() -> None:
    values = {"host": "web-1", "req": {"path": "/api/x", "tags": ["a", "b"]}, "n": 3, "ok": True,
              "flat.key": "flattened first"}
    assert render("{host} {req.path} {req.tags.1} {n} {ok}", values) == "web-1 /api/x b 3 true"
    assert render("{flat.key}", values) == "flattened first"
    assert render("{nope} {req.nope} {req.tags.9}", values) == "{nope} {req.nope} {req.tags.9}"
    assert template_fields("{req.path} and {host}") == {"req", "host"}


def test_templates_never_reach_python_internals_or_allocate_without_bound() -> None:
    class Secretive:
        password = "hunter2"

    values = {"line": "x" * 100_000, "obj": Secretive()}
    assert render("{line}", values) == "x" * FIELD_MAX  # one field contributes a bounded amount
    assert "hunter2" not in render("{obj.password}", values)  # keys and indexes only, never attributes
    for bad in ("{line.__class__.__mro__}", "{line:>300000000}", "{line!r}", "{line[0]}", "{}", "{0}"):
        with pytest.raises(ValueError):
            validate_template(bad)
        assert render(bad, values) == bad, "a template refused at load is never rendered half"


def test_control_characters_never_reach_flashduty() -> None:
    body = Event(title="boom\x00 at\x1b[31m red\nnext", status="Critical", alert_key="k\x00ey",
                 description="line one\n\tindented\x00\x07", labels={"path": "/var/log/a\x00.log"}).to_body()
    assert body["title_rule"] == "boom at[31m red next"
    assert body["alert_key"] == "key"
    assert body["description"] == "line one\n\tindented"
    assert body["labels"] == {"path": "/var/log/a.log"}
    plain = Event(title="plain title", status="Ok", alert_key="k", description="d").to_body()
    assert plain == {"title_rule": "plain title", "event_status": "Ok", "alert_key": "k", "description": "d"}
