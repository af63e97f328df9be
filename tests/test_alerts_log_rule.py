"""A log rule's alert with a controllable clock: threshold window edges, trigger, reminders, quiet and
explicit resolve, identity stability; and the lifecycle's steps on a bare state."""

from __future__ import annotations

from agent.alerts import Resolve, log_rule
from agent.alerts.render import Renderer
from tests.alerts_helpers import T0, feed, make_engine, rule, statuses, tick


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

def test_exclude_and_contains() -> None:
    engine = make_engine()
    rules = [rule(match=None, contains="OutOfMemoryError", identity=[], exclude="ignore-me")]
    assert feed(engine, rules, "java.lang.OutOfMemoryError ignore-me", 1) == []
    assert statuses(feed(engine, rules, "java.lang.OutOfMemoryError: heap", 2)) == ["Critical"]


RENDERER = Renderer("web-1", {"env": "test"})


def test_steps_pending_then_fire_then_persist() -> None:
    r = rule(threshold={"count": 2, "within": 10})
    state = log_rule.new_state("k", "app", r, "default", 600.0)
    assert state.resolve_after == 600.0  # neither resolve.after nor resolve.match: the config's default
    assert log_rule.match(state, r, "/p", "timeout on a", {"db": "a"}, T0, RENDERER) == "nothing"
    assert log_rule.match(state, r, "/p", "timeout on a", {"db": "a"}, T0 + 5, RENDERER) == "fire"
    assert state.firing and state.count == 2 and state.first_seen == T0 and state.window == []
    assert state.title == "db on web-1"
    assert list(state.labels.items()) == [("host", "web-1"), ("source", "app"), ("rule", "db"), ("path", "/p"),
                                          ("db", "a"), ("env", "test")]
    assert log_rule.match(state, r, "/p", "timeout on a", {"db": "a"}, T0 + 6, RENDERER) == "persist"
    assert state.count == 3 and state.last_seen == T0 + 6


def test_quiet_period_and_output_come_from_the_rule_when_it_sets_them() -> None:
    recovery_only = rule(identity=[], resolve={"match": "up"})
    assert log_rule.new_state("k", "app", recovery_only, "default", 600.0).resolve_after is None
    state = log_rule.new_state("k", "app", rule(resolve={"after": 5}, output="pager"), "default", 600.0)
    assert state.resolve_after == 5.0 and state.output == "pager"


def test_long_lines_and_groups_are_bounded_in_the_state() -> None:
    r = rule(samples=2)
    state = log_rule.new_state("k", "app", r, "default", 600.0)
    log_rule.match(state, r, "/p", "x" * 70_000, {"db": "y" * 5000}, T0, RENDERER)
    assert len(state.fields["line"]) == 2000 and len(state.fields["db"]) == 1000
    assert [len(s) for s in state.samples] == [500]
    for i in range(3):
        log_rule.match(state, r, "/p", f"line {i}", {"db": "a"}, T0 + i, RENDERER)
    assert state.samples == ["line 1", "line 2"]


def test_recovery_line_cancels_a_pending_window_and_resolves_an_open_alert() -> None:
    r = rule(threshold={"count": 2, "within": 10})
    state = log_rule.new_state("k", "app", r, "default", 600.0)
    log_rule.match(state, r, "/p", "timeout on a", {"db": "a"}, T0, RENDERER)
    assert log_rule.recovered(state, "restored") == "forget"
    state.firing = True
    assert log_rule.recovered(state, "restored " + "z" * 2000) == Resolve("Recovered: restored " + "z" * 991)


def test_reminder_text_is_replaced_not_stacked() -> None:
    r = rule()
    state = log_rule.new_state("k", "app", r, "default", 600.0)
    log_rule.match(state, r, "/p", "timeout on a", {"db": "a"}, T0, RENDERER)
    base = state.description
    log_rule.before_reminder(state, T0)
    state.count = 7
    log_rule.before_reminder(state, T0)
    assert state.description == f"{base}\n[reminder] still firing: 7 matches since 2027-01-15T08:00:00Z, " \
                                f"last 2027-01-15T08:00:00Z"


def test_an_alert_key_template_that_renders_empty_falls_back_to_the_default_key() -> None:
    """`{job}` of a group that matched nothing used to give `alert_key: ""`: its Ok was rejected (400) and
    dead-lettered, so the alert never closed."""
    engine = make_engine()
    rules = [rule(match=r"backup (?P<job>\w*) failed", identity=[], alert_key="{job}", resolve={"after": 60})]
    fired = feed(engine, rules, "backup  failed", 1)
    assert statuses(fired) == ["Critical"]
    key = fired[0]["alert_key"]
    assert key.strip(), "an empty alert_key went out"
    assert feed(engine, rules, "backup  failed", 2) == []  # the same alert, not a new one per line
    resolved = tick(engine, 62)
    assert statuses(resolved) == ["Ok"] and resolved[0]["alert_key"] == key
    named = feed(engine, rules, "backup nightly failed", 70)
    assert named[0]["alert_key"] == "nightly"  # a non-empty rendering is used as it is
