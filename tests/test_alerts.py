"""Alert lifecycle with a controllable clock: trigger, reminders, quiet and explicit resolve, restarts,
threshold window edges, storm caps and identity stability."""

from __future__ import annotations

from typing import Any

from agent.alerts import AlertEngine, AlertsConfig, hit_events
from agent.rules import RuleConfig, RuleSet
from tests.fake_flashduty import validate_event


def make_engine(**overrides: Any) -> AlertEngine:
    config = AlertsConfig(**{"max_events_per_key_per_minute": 100, "max_events_per_minute": 1000, **overrides})
    return AlertEngine(config, host="web-1", global_labels={"env": "test"}, default_output="default")


def rule(**fields: Any) -> RuleConfig:
    base = {"name": "db", "match": r"timeout on (?P<db>\w+)", "identity": ["db"], "severity": "Critical"}
    return RuleConfig(**{**base, **fields})


T0 = 1_800_000_000.0  # the test clock: seconds after this instant


def tick(engine: AlertEngine, now: float) -> list[dict]:
    return [e.body for e in engine.tick(T0 + now)]


_COMPILED: dict[int, tuple[list[RuleConfig], RuleSet]] = {}


def feed(engine: AlertEngine, rules: list[RuleConfig], line: str, now: float) -> list[dict]:
    if id(rules) not in _COMPILED:
        _COMPILED[id(rules)] = (rules, RuleSet(rules))  # keep `rules` alive so its id stays unique
    hits = _COMPILED[id(rules)][1].evaluate([line])
    events = [e.body for e in hit_events(engine, "app", rules, "/var/log/app.log", hits, T0 + now)]
    for body in events:
        assert validate_event(body) == [], body
    return events


def statuses(events: list[dict]) -> list[str]:
    return [e["event_status"] for e in events]


def test_many_matches_become_one_alert_then_quiet_resolve() -> None:
    engine = make_engine()
    rules = [rule(resolve={"after": 600})]
    out = []
    for second in range(10_000):
        out += feed(engine, rules, "ERROR timeout on orders", float(second) / 10)
        out += tick(engine, float(second) / 10)
    assert statuses(out) == ["Critical"]
    last_match = 9_999 / 10
    assert tick(engine, last_match + 599) == []
    resolved = tick(engine, last_match + 600)
    assert statuses(resolved) == ["Ok"]
    assert resolved[0]["alert_key"] == out[0]["alert_key"]
    assert "10000 occurrence(s)" in resolved[0]["description"]


def test_explicit_recovery_line_resolves_same_identity_only() -> None:
    engine = make_engine()
    rules = [rule(resolve={"match": r"restored on (?P<db>\w+)"})]
    fire_a = feed(engine, rules, "timeout on orders", 1)
    fire_b = feed(engine, rules, "timeout on users", 2)
    assert fire_a[0]["alert_key"] != fire_b[0]["alert_key"]
    ok = feed(engine, rules, "connection restored on users", 3)
    assert statuses(ok) == ["Ok"] and ok[0]["alert_key"] == fire_b[0]["alert_key"]
    assert feed(engine, rules, "connection restored on users", 4) == []  # already closed: nothing to send
    assert [s.name for s in engine.states.values() if s.firing] == ["db"]


def test_threshold_window_edges() -> None:
    engine = make_engine()
    rules = [rule(threshold={"count": 3, "within": 60})]
    assert feed(engine, rules, "timeout on a", 0) == []
    assert feed(engine, rules, "timeout on a", 30) == []
    # at t=60 the match from t=0 is exactly `within` old: outside the window (window is (now-60, now])
    assert feed(engine, rules, "timeout on a", 60) == []
    fired = feed(engine, rules, "timeout on a", 61)
    assert statuses(fired) == ["Critical"]
    assert "3 matching line(s)" in fired[0]["description"]


def test_reminders_carry_updated_count_and_respect_interval() -> None:
    engine = make_engine()
    rules = [rule(repeat_interval=300, resolve={"after": 3600})]
    assert statuses(feed(engine, rules, "timeout on a", 0)) == ["Critical"]
    for t in range(1, 100):
        feed(engine, rules, "timeout on a", t)
    assert tick(engine, 299) == []
    reminder = tick(engine, 300)
    assert statuses(reminder) == ["Critical"]
    assert "still firing: 100 matches" in reminder[0]["description"]
    assert tick(engine, 301) == []
    feed(engine, rules, "timeout on a", 400)
    second = tick(engine, 600)
    assert "still firing: 101 matches" in second[0]["description"]
    assert second[0]["description"].count("[reminder]") == 1


def test_open_alert_survives_restart_and_still_gets_its_ok() -> None:
    engine = make_engine()
    rules = [rule(resolve={"after": 60})]
    fired = feed(engine, rules, "timeout on orders", 100)
    rows, removed = engine.take_changes()
    assert len(rows) == 1 and removed == []
    restarted = make_engine()
    restarted.restore(dict(rows))
    assert tick(restarted, 150) == []
    ok = tick(restarted, 161)
    assert statuses(ok) == ["Ok"] and ok[0]["alert_key"] == fired[0]["alert_key"]
    assert restarted.take_changes() == ([], [fired[0]["alert_key"]])


def test_removed_rule_resolves_its_open_alert() -> None:
    engine = make_engine()
    feed(engine, [rule()], "timeout on orders", 1)
    out = [e.body for e in engine.resolve_removed({("app", "other-rule")}, T0 + 2)]
    assert statuses(out) == ["Ok"] and "removed" in out[0]["description"]


def test_alert_key_is_stable_and_ignores_counts_times_and_text() -> None:
    rules = [rule()]
    one, two = make_engine(), make_engine()
    a = feed(one, rules, "12:00 timeout on orders after 5ms", 1)[0]["alert_key"]
    b = feed(two, rules, "13:30 other text timeout on orders", 999)[0]["alert_key"]
    c = feed(two, rules, "timeout on users", 1000)[0]["alert_key"]
    assert a == b != c
    templated = make_engine()
    key = feed(templated, [rule(alert_key="db-{db}")], "timeout on orders", 1)[0]["alert_key"]
    assert key == "db-orders"


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


def test_exclude_and_contains() -> None:
    engine = make_engine()
    rules = [rule(match=None, contains="OutOfMemoryError", identity=[], exclude="ignore-me")]
    assert feed(engine, rules, "java.lang.OutOfMemoryError ignore-me", 1) == []
    assert statuses(feed(engine, rules, "java.lang.OutOfMemoryError: heap", 2)) == ["Critical"]


def test_labels_limits_are_enforced_locally() -> None:
    engine = make_engine()
    many = {f"l{i}": "v" * 3000 for i in range(80)}
    out = feed(engine, [rule(labels={**many, "bad-key.x": "1"}, title="T" * 600)], "timeout on a", 1)[0]
    assert len(out["labels"]) == 50 and len(out["title_rule"]) == 512
    assert all(len(v) <= 2048 for v in out["labels"].values())
    assert out["labels"]["host"] == "web-1" and out["labels"]["rule"] == "db"  # automatic labels kept first


async def test_commits_reach_the_outbox_in_the_order_the_engine_produced_them(tmp_path) -> None:
    """A source batch's Warning queued for commit must get a lower outbox id than an Ok the ticker
    produces right after (the backlog bench once saw Ok sent ~9 s before its alert)."""
    import json

    from agent.app import Agent
    from agent.config import parse_config
    from agent.outbox import Commit, QueuedEvent
    from tests.conftest import free_port

    config = parse_config(f"state_dir: {tmp_path}\nhealth: {{enabled: false}}\nshutdown_timeout: 100ms\n"
                          f"flashduty: {{push_url: 'http://127.0.0.1:{free_port()}/x?integration_key=k'}}\n")
    agent = Agent(config, None)
    await agent.start()
    try:
        def body(status: str) -> dict:
            return {"title_rule": "t", "event_status": status, "alert_key": "k"}

        agent._enqueue_commit(Commit(events=[QueuedEvent("default", "k", body("Warning"))]))  # as a pipeline does
        await agent._commit(Commit(events=[QueuedEvent("default", "k", body("Ok"))]))  # as the ticker does
        head = await agent.outbox.head("default", 10)
        assert [json.loads(e.body)["event_status"] for e in head] == ["Warning", "Ok"]
    finally:
        await agent.shutdown()


def test_alert_capacity_suppresses_new_identities_but_keeps_open_ones_working() -> None:
    engine = make_engine(max_open_alerts=4)
    rules = [rule(resolve={"after": 3600})]
    out = []
    for i in range(10):
        out += feed(engine, rules, f"timeout on db{i}", i)
    assert statuses(out) == ["Critical"] * 4  # db0..db3 tracked, the other six were not
    assert engine.stats.suppressed["max_open_alerts"] == 6
    assert feed(engine, rules, "timeout on db1", 11) == []  # an open alert still counts its matches
    assert engine.states[out[1]["alert_key"]].count == 2
    summary = [e for e in tick(engine, 12) if e["labels"].get("rule") == "storm-control"]
    assert summary and "4 open alerts" in summary[0]["description"]
    assert engine.crowded() and engine.next_quiet_resolve() == T0 + 3600  # db0, the oldest


def test_commit_carries_the_events_and_the_state_changes_that_produced_them() -> None:
    from agent.outbox import Commit

    engine = make_engine()
    rules = [rule(resolve={"match": r"restored on (?P<db>\w+)"})]
    fired = engine.on_match("app", rules[0], "/var/log/app.log", "timeout on a", {"db": "a"}, T0)
    change = engine.commit(fired)
    assert isinstance(change, Commit) and change.events is fired
    assert [key for key, _ in change.alerts] == [fired[0].alert_key] and change.forget_alerts == []
    assert engine.commit([]).empty()  # the changes went with the first commit
    ok = engine.on_resolve_match("app", rules[0], "/var/log/app.log", "restored on a", {"db": "a"}, T0 + 1)
    change = engine.commit(ok)
    assert change.alerts == [] and change.forget_alerts == [fired[0].alert_key]
    assert not change.checkpoints and not change.forget_checkpoints  # the caller adds those
