"""The engine around the lifecycles: restarts, removed rules, reload, and the commits that carry events
with the state changes that produced them (in the order the engine produced them)."""

from __future__ import annotations

from agent.alerts import AlertsConfig
from tests.alerts_helpers import T0, feed, make_engine, rule, statuses, tick


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

        agent.outbox.writer.submit(Commit(events=[QueuedEvent("default", "k", body("Warning"))]))  # as a pipeline does
        await agent.outbox.writer.commit(Commit(events=[QueuedEvent("default", "k", body("Ok"))]))  # as the ticker does
        head = await agent.outbox.queue.head("default", 10)
        assert [json.loads(e.body)["event_status"] for e in head] == ["Warning", "Ok"]
    finally:
        await agent.shutdown()

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


def test_reconfigure_applies_to_new_alerts_and_open_ones_keep_what_they_were_rendered_with() -> None:
    engine = make_engine()
    rules = [rule(resolve={"after": 600})]
    first = feed(engine, rules, "timeout on a", 1)[0]
    engine.reconfigure(AlertsConfig(max_events_per_key_per_minute=100, max_events_per_minute=2),
                       host="web-2", global_labels={"env": "prod"}, default_output="other")
    assert engine.config.max_events_per_minute == 2
    [second] = engine.on_match("app", rules[0], "/var/log/app.log", "timeout on b", {"db": "b"}, T0 + 2)
    assert second.output == "other"
    assert second.body["labels"]["host"] == "web-2" and second.body["labels"]["env"] == "prod"
    assert engine.rule_alert_key("app", rules[0], {"db": "a"}, "/var/log/app.log") != first["alert_key"]
    assert feed(engine, rules, "timeout on c", 3) == []  # the new global cap (2/min) is used up
    assert engine.stats.suppressed["global_rate"] == 1
    ok = [e for e in engine.tick(T0 + 700) if e.alert_key == first["alert_key"]]
    assert statuses([e.body for e in ok]) == ["Ok"]
    assert ok[0].output == "default" and ok[0].body["labels"]["host"] == "web-1"
    assert tick(engine, 701) == []
