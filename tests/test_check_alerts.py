"""Checks through the whole agent: a check's state changes become events with the log alerts' lifecycle."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.conftest import free_port
from tests.fake_flashduty import FakeFlashduty, validate_event


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


async def test_plugins_do_not_inherit_credentials_or_the_notify_socket(monkeypatch, tmp_path: Path) -> None:
    from agent.checks import CheckConfig, run_check_once
    from agent.logsetup import REDACTOR

    REDACTOR.add(["plugin-secret-key-123"])
    monkeypatch.setenv("FLASHDUTY_PUSH_URL", "https://x/push?integration_key=plugin-secret-key-123")
    monkeypatch.setenv("MY_OTHER_URL", "https://x/push?integration_key=plugin-secret-key-123")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("KEEP_ME", "yes")
    script = tmp_path / "env.sh"
    script.write_text("#!/bin/sh\necho \"env ok | n=1\"\nenv | grep -E 'KEEP_ME|NOTIFY|FLASHDUTY|MY_OTHER|secret'\n")
    script.chmod(0o755)
    result = await run_check_once(CheckConfig(name="env", command=[str(script)]))
    assert "KEEP_ME=yes" in result.long_output
    for leaked in ("plugin-secret-key-123", "NOTIFY_SOCKET", "FLASHDUTY_PUSH_URL"):
        assert leaked not in result.long_output
