"""Storm control: per-alert and global caps per minute, the storm-control summary alert, and an Ok that is
never held back."""

from __future__ import annotations

from agent.alerts import AlertsConfig, EngineStats, Resolve
from agent.alerts.render import Renderer
from agent.alerts.storm import StormControl, Summary
from tests.alerts_helpers import T0, feed, make_engine, rule, statuses, tick


def test_per_key_storm_cap_summarises_and_never_drops_ok() -> None:
    engine = make_engine(max_events_per_key_per_minute=2)
    rules = [rule(repeat_interval=1, resolve={"after": 30})]
    out = feed(engine, rules, "timeout on a", 0)
    for t in range(1, 20):
        feed(engine, rules, "timeout on a", t)
        out += tick(engine, t)
    criticals = [e for e in out if e["event_status"] == "Critical"]
    assert len(criticals) == 2  # the cap: 2 per key per minute
    assert engine.stats.suppressed["per_key_rate"] > 0
    summary = [e for e in out if e["labels"].get("rule") == "storm-control"]
    assert summary and "suppressed" in summary[0]["description"]
    ok = tick(engine, 19 + 30)
    assert "Ok" in statuses(ok)  # the Ok is never held back

def test_global_storm_cap_holds_new_alerts_and_delivers_them_later() -> None:
    engine = make_engine(max_events_per_minute=3)
    rules = [rule(resolve={"after": 3600})]
    out = []
    for i in range(10):
        out += feed(engine, rules, f"timeout on db{i}", i)
    assert len([e for e in out if e["labels"].get("rule") == "db"]) == 3
    assert engine.stats.suppressed["global_rate"] == 7
    later = tick(engine, 63)  # a minute later the held-back alerts go out
    fired = [e for e in later if e["event_status"] == "Critical" and e["labels"].get("rule") == "db"]
    assert len(fired) == 3  # again capped at 3 per minute, the rest keep waiting
    assert any("suppressed" in e["description"] for e in fired)

def test_alert_resolved_before_it_was_ever_notified_sends_nothing() -> None:
    engine = make_engine(max_events_per_minute=1)
    rules = [rule(resolve={"match": r"restored on (?P<db>\w+)"})]
    assert len(feed(engine, rules, "timeout on a", 0)) == 1
    assert feed(engine, rules, "timeout on b", 1) == []  # held back by the global cap
    assert feed(engine, rules, "restored on b", 2) == []  # nothing open on the server: no Ok to send
    assert engine.stats.suppressed["resolved_before_notified"] == 1


def test_send_windows_slide_per_key_and_in_all() -> None:
    storm = StormControl(AlertsConfig(max_events_per_key_per_minute=2, max_events_per_minute=3), EngineStats(), "h")
    storm.sent("a", T0)
    storm.sent("a", T0 + 1)
    assert storm.allowed("a", T0 + 2) == "per_key_rate"
    assert storm.allowed("b", T0 + 2) is None
    storm.sent("b", T0 + 2)
    assert storm.allowed("c", T0 + 3) == "global_rate"
    # a send exactly a minute old no longer counts, per key and in all
    assert storm.allowed("a", T0 + 60) is None
    storm.sent("a", T0 + 60)
    assert storm.allowed("a", T0 + 60.5) == "per_key_rate"


def test_a_resolved_alert_s_send_window_goes_with_it() -> None:
    storm = StormControl(AlertsConfig(max_events_per_key_per_minute=1), EngineStats(), "h")
    storm.sent("a", T0)
    assert storm.allowed("a", T0 + 1) == "per_key_rate"
    storm.forget("a")
    assert storm.allowed("a", T0 + 1) is None


def test_summary_at_most_once_a_minute_then_resolves_after_a_calm_minute() -> None:
    stats = EngineStats()
    storm = StormControl(AlertsConfig(), stats, "web-1")
    renderer = Renderer("web-1", {"env": "test"})
    assert storm.summary(None, T0, renderer, "default") is None  # nothing suppressed: nothing to say
    storm.suppressed("per_key_rate", T0)
    first = storm.summary(None, T0, renderer, "default")
    assert isinstance(first, Summary) and first.state.key == storm.key and first.state.count == 1
    assert first.state.output == "default" and first.state.labels["rule"] == "storm-control"
    assert "suppressed 1 event(s) in the last minute on web-1" in first.description
    storm.suppressed("global_rate", T0 + 10)
    assert storm.summary(first.state, T0 + 10, renderer, "default") is None  # at most one a minute
    storm.suppressed("global_rate", T0 + 50)
    again = storm.summary(first.state, T0 + 61, renderer, "default")  # T0's has left the window
    assert isinstance(again, Summary) and again.state.count == 2
    assert storm.summary(again.state, T0 + 115, renderer, "default") is None  # calm, but not for a minute yet
    assert storm.summary(again.state, T0 + 121, renderer, "default") == Resolve(
        "Storm control: nothing suppressed in the last minute")
    assert stats.suppressed == {"per_key_rate": 1, "global_rate": 2}
