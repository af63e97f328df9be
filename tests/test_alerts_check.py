"""A check's alert: its state changes become events with the log alerts' lifecycle, on a bare engine and
through the whole agent (across a restart)."""

from __future__ import annotations

import socket
from pathlib import Path

from agent.checks import CheckConfig
from tests.alerts_helpers import T0, make_engine, observation, statuses, tick
from tests.conftest import free_port
from tests.fake_flashduty import FakeFlashduty, validate_event

API = CheckConfig.model_validate({"name": "api", "tcp": {"host": "127.0.0.1", "port": 1}})


def bodies(events: list) -> list[dict]:
    return [e.body for e in events]


def test_a_check_fires_once_per_severity_and_resolves_on_ok() -> None:
    engine = make_engine()
    assert engine.on_check(API, observation("api", "Ok"), T0) == [] and engine.states == {}  # a steady Ok
    fired = bodies(engine.on_check(API, observation("api", "Warning", "slow"), T0 + 1))
    assert statuses(fired) == ["Warning"] and fired[0]["title_rule"] == "api on web-1: slow"
    assert fired[0]["description"] == "slow\n\ndetails\n\nstatus: WARNING, perfdata: "
    assert list(fired[0]["labels"].items()) == [("host", "web-1"), ("source", "checks"), ("check", "api"),
                                                ("env", "test")]
    assert engine.on_check(API, observation("api", "Warning", "slow"), T0 + 2) == []  # unchanged: counted only
    worse = bodies(engine.on_check(API, observation("api", "Critical", "down"), T0 + 3))
    assert statuses(worse) == ["Critical"] and worse[0]["alert_key"] == fired[0]["alert_key"]
    ok = bodies(engine.on_check(API, observation("api", "Ok", "up again"), T0 + 4))
    assert statuses(ok) == ["Ok"] and ok[0]["alert_key"] == fired[0]["alert_key"]
    assert ok[0]["description"].startswith("Recovered: up again\n\n3 occurrence(s) from ")
    assert engine.states == {}
    assert engine.take_changes() == ([], [fired[0]["alert_key"]])


def test_a_flapping_check_sends_one_warning_then_stays_quiet_until_it_settles() -> None:
    engine = make_engine()
    start = bodies(engine.on_check(API, observation("api", "Ok", flapping=True, flapping_changed=True), T0))
    assert statuses(start) == ["Warning"]
    assert start[0]["description"].startswith("Check is flapping; notifications are suppressed until it settles.")
    assert engine.on_check(API, observation("api", "Critical", flapping=True), T0 + 1) == []
    assert engine.states[start[0]["alert_key"]].count == 1 and engine.open_alerts()[0]["flapping"]
    settled = bodies(engine.on_check(API, observation("api", "Ok", flapping_changed=True), T0 + 2))
    assert statuses(settled) == ["Ok"] and engine.states == {}


def test_a_flapping_check_without_an_alert_is_counted_then_forgotten() -> None:
    engine = make_engine()
    assert engine.on_check(API, observation("api", "Ok", flapping=True), T0) == []
    assert len(engine.states) == 1 and engine.open_alerts() == []  # tracked, not open
    assert tick(engine, 1) == [] and engine.states == {}


def test_check_reminders_repeat_the_description_and_its_alert_key_template() -> None:
    check = CheckConfig.model_validate({"name": "api", "tcp": {"host": "127.0.0.1", "port": 1},
                                        "repeat_interval": "60s", "alert_key": "api-{check}-{host}", "output": "pager"})
    engine = make_engine()
    [fired] = engine.on_check(check, observation("api", "Critical", "down"), T0)
    assert fired.alert_key == "api-api-web-1" and fired.output == "pager"
    assert tick(engine, 59) == []
    reminder = tick(engine, 60)
    assert statuses(reminder) == ["Critical"] and reminder[0]["description"] == fired.body["description"]


def listener(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


async def test_tcp_check_fires_once_reminds_never_and_recovers_across_restart(
        tmp_path: Path, fake: FakeFlashduty, agent_process) -> None:
    port = free_port()
    stale = tmp_path / "backup.tar"
    stale.write_text("old")
    agent = agent_process(f"""
        state_dir: ./state
        labels: {{team: sre}}
        flashduty: {{push_url: "{fake.url}"}}
        health: {{listen: "127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}"}}
        checks:
          - name: api-port
            tcp: {{host: 127.0.0.1, port: {port}}}
            interval: 200ms
            timeout: 1s
            failures_before_alert: 2
            labels: {{class: net}}
          - name: no-such-binary
            command: ["/nonexistent/check_thing"]
            interval: 1s
    """)
    agent.start()
    await agent.wait_ready()
    # nothing listens: after 2 failures the check alert fires, once
    await fake.wait_until(lambda: any(e["labels"].get("check") == "api-port" for e in fake.events), 10)
    fired = [e for e in fake.events if e["labels"].get("check") == "api-port"]
    assert [e["event_status"] for e in fired] == ["Critical"]
    assert validate_event(fired[0]) == [] and fired[0]["labels"]["class"] == "net"
    assert fired[0]["labels"]["team"] == "sre" and fired[0]["labels"]["host"]
    # a check that cannot run is itself an alert (unknown_status defaults to Warning)
    await fake.wait_until(lambda: any(e["labels"].get("check") == "no-such-binary" for e in fake.events), 10)
    broken = next(e for e in fake.events if e["labels"].get("check") == "no-such-binary")
    assert broken["event_status"] == "Warning"
    # restart while firing: the open alert is restored, not re-sent, and still gets its Ok
    assert agent.stop() == 0
    agent.start()
    await agent.wait_ready()
    sock = listener(port)
    try:
        await fake.wait_until(
            lambda: [e["event_status"] for e in fake.events_for(fired[0]["alert_key"])] == ["Critical", "Ok"], 10)
    finally:
        sock.close()
    assert agent.stop() == 0
    assert [e["event_status"] for e in fake.events_for(fired[0]["alert_key"])] == ["Critical", "Ok"]
