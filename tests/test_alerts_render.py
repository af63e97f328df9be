"""What Flashduty sees of an alert: labels in priority order, template values, protocol limits."""

from __future__ import annotations

from agent.alerts import AlertState
from agent.alerts.render import Renderer, iso
from tests.alerts_helpers import T0, feed, make_engine, rule


def test_labels_limits_are_enforced_locally() -> None:
    engine = make_engine()
    many = {f"l{i}": "v" * 3000 for i in range(80)}
    out = feed(engine, [rule(labels={**many, "bad-key.x": "1"}, title="T" * 600)], "timeout on a", 1)[0]
    assert len(out["labels"]) == 50 and len(out["title_rule"]) == 512
    assert all(len(v) <= 2048 for v in out["labels"].values())
    assert out["labels"]["host"] == "web-1" and out["labels"]["rule"] == "db"  # automatic labels kept first


def test_automatic_labels_first_then_the_alert_s_own_then_the_global_ones() -> None:
    renderer = Renderer("web-1", {"env": "prod", "rule": "a global label never overrides"})
    log_state = AlertState(key="k", kind="log", source="app", name="db", output="o", fields={"path": "/p"})
    assert list(renderer.labels(log_state, {"team": "x", "env": "own"}).items()) == [
        ("host", "web-1"), ("source", "app"), ("rule", "db"), ("path", "/p"), ("team", "x"), ("env", "own")]
    check_state = AlertState(key="k", kind="check", source="checks", name="api", output="o")
    assert list(renderer.labels(check_state, {}).items()) == [
        ("host", "web-1"), ("source", "checks"), ("check", "api"), ("env", "prod"),
        ("rule", "a global label never overrides")]


def test_template_values() -> None:
    renderer = Renderer("web-1", {"env": "prod"})
    state = AlertState(key="k", kind="log", source="app", name="db", output="o", severity="Critical", count=3,
                       first_seen=T0, labels={"env": "label"}, fields={"db": "orders"}, samples=["one", "two"])
    values = renderer.values(state)
    assert values["env"] == "label" and values["db"] == "orders" and values["host"] == "web-1"
    assert values["rule"] == values["check"] == "db" and values["status"] == values["severity"] == "Critical"
    assert values["first_seen"] == iso(T0) == "2027-01-15T08:00:00Z" and values["last_seen"] == "-"
    assert values["samples"] == "> one\n> two" and values["count"] == 3
