"""Absence and expect rules in the engine, on a test clock (the agent-level tests are in
test_alerts_timed_agent.py)."""

from __future__ import annotations

import pytest

from agent.alerts import AlertState
from agent.alerts.silence import SourceView, seen_at
from agent.linetime import line_time
from agent.model import ModelError
from agent.rules import RuleConfig
from tests.alerts_helpers import T0, feed, make_engine, statuses, tick


def heartbeat(**fields: object) -> RuleConfig:
    return RuleConfig.model_validate({"name": "hb", "match": r"heartbeat ok", "absent": {"after": "60s"},
                                      "severity": "Critical", **fields})


def backup(**fields: object) -> RuleConfig:
    return RuleConfig.model_validate({"name": "backup", "match": r"backup (?P<job>\S+) started", "identity": ["job"],
                                      "expect": {"match": r"backup (?P<job>\S+) finished", "within": "100s"},
                                      "title": "backup {job} late", **fields})


def test_absence_fires_after_the_wait_not_before_and_resolves_on_the_next_line() -> None:
    engine, rules = make_engine(), [heartbeat()]
    assert engine.watch_rules("app", rules, T0) == []
    assert feed(engine, rules, "heartbeat ok", 10) == []
    assert tick(engine, 69) == []  # 59 s after the line
    fired = tick(engine, 70)
    assert statuses(fired) == ["Critical"]
    assert "No line matching the rule for 1m" in fired[0]["description"]
    assert tick(engine, 200) == []  # fired once
    ok = feed(engine, rules, "heartbeat ok", 250)
    assert statuses(ok) == ["Ok"] and "after 4m of silence" in ok[0]["description"]
    assert tick(engine, 300) == []
    assert statuses(tick(engine, 310)) == ["Critical"]  # silent again for 60 s


def test_absence_clock_starts_with_the_rule_when_no_line_ever_matched() -> None:
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0 + 5)
    assert tick(engine, 64) == []
    body = tick(engine, 65)
    assert statuses(body) == ["Critical"] and "watched since" in body[0]["description"]


def test_absence_with_identity_watches_each_identity_seen() -> None:
    engine = make_engine()
    rules = [heartbeat(match=r"worker (?P<worker>\w+) alive", identity=["worker"], title="{worker} silent")]
    engine.watch_rules("app", rules, T0)
    assert tick(engine, 100) == []  # no identity seen yet: nothing to miss
    feed(engine, rules, "worker a alive", 100)
    feed(engine, rules, "worker b alive", 100)
    for t in range(110, 160, 10):
        feed(engine, rules, "worker a alive", t)
        assert tick(engine, t) == []
    fired = tick(engine, 160)
    assert [e["title_rule"] for e in fired] == ["b silent"] and fired[0]["labels"]["worker"] == "b"


def test_absence_waits_while_the_source_is_behind_then_says_so() -> None:
    engine, rules = make_engine(), [heartbeat()]
    behind = SourceView(True, "4096 bytes not read yet")
    engine.set_source_look(lambda source: behind)
    engine.watch_rules("app", rules, T0)
    assert tick(engine, 100) == []  # due at 60, held from 100 while behind
    assert tick(engine, 159) == []
    fired = tick(engine, 160)  # held at most one more wait
    assert statuses(fired) == ["Critical"]
    assert "the agent is behind reading it: 4096 bytes not read yet" in fired[0]["description"]


def test_a_backlog_line_counts_for_when_it_was_written() -> None:
    # read at T0+500, written at T0+480: the clock restarts at 480, so the rule is due at 540
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0)
    stamp = "2027-01-15T08:08:00Z"
    assert line_time(f"{stamp} heartbeat ok") == T0 + 480
    feed(engine, rules, f"{stamp} heartbeat ok", 500)
    assert tick(engine, 539) == []
    assert statuses(tick(engine, 540)) == ["Critical"]


def test_a_stamp_not_after_the_last_seen_counts_as_read_now() -> None:
    assert seen_at("2020-01-01T00:00:00Z heartbeat ok (quoted old date)", T0, T0 - 10, 0.0) == T0
    assert seen_at("2020-01-01T00:00:00Z heartbeat ok (quoted old date)", T0, 0.0, T0 - 600) == T0  # too old
    assert seen_at("no stamp", T0, 0.0, 0.0) == T0
    assert seen_at("2099-01-01T00:00:00Z from the future", T0, 0.0, 0.0) == T0
    assert seen_at("2027-01-15T08:08:00Z heartbeat ok", T0 + 500, 0.0, T0) == T0 + 480


def test_absence_state_is_persisted_while_quiet_and_restored_with_its_clock() -> None:
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0)
    feed(engine, rules, "heartbeat ok", 30)
    upserts, removed = engine.take_changes()
    assert len(upserts) == 1 and removed == []
    restored = make_engine()
    restored.restore(dict(upserts))
    restored.watch_rules("app", rules, T0 + 50)  # a restart at 50: the stored clock (30) holds
    assert tick(restored, 89) == []
    assert statuses(tick(restored, 90)) == ["Critical"]


def test_a_reload_keeps_the_clock_and_takes_a_new_wait() -> None:
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0)
    feed(engine, rules, "heartbeat ok", 10)
    longer = [heartbeat(absent={"after": "120s"})]
    engine.watch_rules("app", longer, T0 + 40)
    assert tick(engine, 129) == []
    assert statuses(tick(engine, 130)) == ["Critical"]


def test_a_removed_absence_rule_drops_its_state_silently() -> None:
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0)
    engine.take_changes()
    assert engine.resolve_removed(set(), T0 + 10) == []
    assert engine.states == {}
    assert len(engine.take_changes()[1]) == 1  # and its stored row goes


def test_expect_on_time_sends_nothing_late_fires_and_the_finish_resolves() -> None:
    engine, rules = make_engine(), [backup()]
    engine.watch_rules("app", rules, T0)
    assert feed(engine, rules, "backup db started", 0) == []
    assert feed(engine, rules, "backup files started", 0) == []
    assert feed(engine, rules, "backup files finished", 50) == []  # on time
    assert tick(engine, 99) == []
    late = tick(engine, 100)
    assert [e["title_rule"] for e in late] == ["backup db late"] and statuses(late) == ["Warning"]
    assert "not finished within 1m40s" in late[0]["description"] and late[0]["labels"]["job"] == "db"
    assert tick(engine, 500) == []
    ok = feed(engine, rules, "backup db finished", 600)
    assert statuses(ok) == ["Ok"] and "Finished after 10m" in ok[0]["description"]
    assert engine.states == {}


def test_expect_a_repeated_start_restarts_the_wait() -> None:
    engine, rules = make_engine(), [backup()]
    engine.watch_rules("app", rules, T0)
    feed(engine, rules, "backup db started", 0)
    feed(engine, rules, "backup db started", 80)
    assert tick(engine, 150) == []
    assert statuses(tick(engine, 180)) == ["Warning"]


def test_expect_pending_waits_survive_a_restart() -> None:
    engine, rules = make_engine(), [backup()]
    engine.watch_rules("app", rules, T0)
    feed(engine, rules, "backup db started", 0)
    restored = make_engine()
    restored.restore(dict(engine.take_changes()[0]))
    restored.watch_rules("app", rules, T0 + 30)
    assert statuses(tick(restored, 100)) == ["Warning"]


def test_a_finish_without_a_start_changes_nothing() -> None:
    engine, rules = make_engine(), [backup()]
    engine.watch_rules("app", rules, T0)
    assert feed(engine, rules, "backup db finished", 5) == []
    assert engine.states == {}


def test_a_rule_changing_kind_closes_what_the_old_kind_opened() -> None:
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0)
    assert statuses(tick(engine, 60)) == ["Critical"]
    plain = [RuleConfig(name="hb", match="heartbeat ok")]
    events = [e.body for e in engine.watch_rules("app", plain, T0 + 70)]
    assert statuses(events) == ["Ok"]
    assert not any(s.kind == "absent" for s in engine.states.values())


@pytest.mark.parametrize("extra, message", [
    ({"threshold": {"count": 2}}, "`threshold` does not apply to an `absent` rule"),
    ({"resolve": {"after": "1m"}}, "`resolve` does not apply"),
    ({"alert_key": "x"}, "`alert_key` does not apply"),
    ({"expect": {"match": "done", "within": "1m"}}, "one of `absent` and `expect`"),
])
def test_timed_rules_refuse_what_does_not_apply(extra: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        heartbeat(**extra)


def test_expect_finish_must_capture_the_identity() -> None:
    rule = backup(expect={"match": "backup finished", "within": "1m"})  # a plain-text source's rule
    rule.check_for_source(True)  # a structured source's fields may carry the identity
    with pytest.raises(ValueError, match=r"expect\.match must capture the identity groups"):
        rule.check_for_source(False)


def test_state_round_trips_with_its_timer() -> None:
    state = AlertState(key="k", kind="absent", source="app", name="hb", output="default", deadline=5.0, wait=3.0)
    again = AlertState.from_json(state.to_json())
    assert (again.kind, again.deadline, again.wait) == ("absent", 5.0, 3.0)


def test_an_expect_start_quoting_an_old_date_waits_from_when_it_was_read() -> None:
    engine, rules = make_engine(), [backup()]
    engine.watch_rules("app", rules, T0)
    feed(engine, rules, "2019-03-01T00:00:00Z backup db started (rerun of the 2019 job)", 0)
    assert tick(engine, 1) == []  # not "started 7 years ago"
    assert statuses(tick(engine, 100)) == ["Warning"]


def test_after_a_long_downtime_the_hold_counts_from_when_the_source_was_first_seen_behind() -> None:
    engine, rules = make_engine(), [heartbeat()]
    engine.watch_rules("app", rules, T0)
    feed(engine, rules, "heartbeat ok", 0)
    restored = make_engine()
    restored.restore(dict(engine.take_changes()[0]))
    behind = True
    restored.set_source_look(lambda source: SourceView(behind, "first scan"))
    restored.watch_rules("app", rules, T0 + 1000)  # down for 1000 s: long overdue
    assert tick(restored, 1000) == []  # the backlog may hold heartbeats: wait
    feed(restored, rules, "heartbeat ok", 1001)  # ... and it did
    behind = False
    assert tick(restored, 1002) == []
