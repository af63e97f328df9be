"""Absence and expect rules in the real agent: a subprocess, real files, the Flashduty-validating endpoint.

Time is real and short (waits of a few seconds; the agent's clock ticks once a second), so each assertion
about *when* allows the tick plus delivery; the assertions about *whether* (nothing for a restart, a
reload, a rotation) wait until the agent has demonstrably read the lines that should have kept it quiet.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty, validate_event

AFTER = 3.0  # absent.after and expect.within in these tests
TICK_SLACK = 2.5  # the agent's one-second tick, the look at the source, delivery

CONFIG = """
state_dir: ./state
flashduty:
  push_url: {url}
  retry_initial: 50ms
  retry_max: 500ms
health:
  listen: 127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}
alerts:
  max_events_per_key_per_minute: 1000
  max_events_per_minute: 100000
self_alerts: {{enabled: false}}
labels: {{generation: "{generation}"}}
logs:
  - name: app
    paths: ["./logs/app.log"]
    start_at: beginning
    rules:
      - name: heartbeat-missing
        match: 'heartbeat ok'
        absent: {{after: {after}s}}
        severity: Critical
      - name: worker-silent
        match: 'worker (?P<worker>\\w+) alive'
        identity: [worker]
        absent: {{after: {after}s}}
        title: "worker {{worker}} silent"
      - name: backup-late
        match: 'backup (?P<job>\\S+) started'
        expect: {{match: 'backup (?P<job>\\S+) finished', within: {after}s}}
        identity: [job]
        severity: Warning
        title: "backup {{job}} did not finish"
"""


def config(url: str, generation: int = 1) -> str:
    return CONFIG.format(url=url, after=AFTER, generation=generation)


class Log:
    def __init__(self, root: Path) -> None:
        (root / "logs").mkdir(exist_ok=True)
        self.path = root / "logs" / "app.log"
        self.path.touch()

    def write(self, text: str, *, stamped: bool = True) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ ") if stamped else ""
        with self.path.open("a") as f:
            f.write(f"{stamp}{text}\n")


def titled(fake: FakeFlashduty, needle: str, status: str | None = None) -> list[dict[str, Any]]:
    return [e for e in fake.events if needle in e["title_rule"] and (status is None or e["event_status"] == status)]


def matches(agent: Any, rule: str) -> int:
    return int(agent.get("/status")[1]["rules"].get(f"app/{rule}", 0))


async def keep_beating(log: Log, stop: asyncio.Event, line: str = "heartbeat ok", every: float = 0.25) -> None:
    while not stop.is_set():
        log.write(line)
        await asyncio.sleep(every)


@pytest.fixture
async def agent_and_log(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> Any:
    log = Log(tmp_path)
    agent = agent_process(config(fake.url))
    agent.start()
    await agent.wait_ready()
    return agent, log


async def test_absence_fires_after_the_wait_not_before_and_resolves_on_the_next_line(
        agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    stop = asyncio.Event()
    beating = asyncio.create_task(keep_beating(log, stop))
    await wait_until(lambda: matches(agent, "heartbeat-missing") >= 8, 10, "heartbeats read")
    assert titled(fake, "heartbeat-missing") == []  # beating for longer than the wait: nothing
    stop.set()
    await beating
    stopped = time.monotonic()
    await fake.wait_until(lambda: titled(fake, "heartbeat-missing", "Critical"), AFTER + 10)
    took = time.monotonic() - stopped
    assert AFTER - 0.3 <= took <= AFTER + TICK_SLACK, took
    fired = titled(fake, "heartbeat-missing", "Critical")[0]
    assert validate_event(fired) == [] and "No line matching the rule for" in fired["description"]
    assert "logs/app.log was last written to at" in fired["description"]  # the why the agent knows
    log.write("heartbeat ok")
    await fake.wait_until(lambda: titled(fake, "heartbeat-missing", "Ok"), 10)
    assert [e["event_status"] for e in titled(fake, "heartbeat-missing")] == ["Critical", "Ok"]
    assert fake.violations == []
    assert agent.stop() == 0


async def test_absence_with_identity_alerts_for_the_identity_that_stopped(agent_and_log: Any,
                                                                          fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    stop = asyncio.Event()
    log.write("worker b alive")
    beating = asyncio.create_task(keep_beating(log, stop, "worker a alive"))
    try:
        await fake.wait_until(lambda: titled(fake, "worker"), AFTER + 10)
        await wait_until(lambda: matches(agent, "worker-silent") >= AFTER * 4 + 8, 10, "worker a kept going")
    finally:
        stop.set()
        await beating
    assert [(e["title_rule"], e["labels"]["worker"]) for e in titled(fake, "worker")] == [("worker b silent", "b")]
    assert agent.stop() == 0


async def test_a_restart_while_lines_continue_raises_nothing(agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    stop = asyncio.Event()
    beating = asyncio.create_task(keep_beating(log, stop))
    try:
        await wait_until(lambda: matches(agent, "heartbeat-missing") >= 4, 10, "heartbeats read")
        assert agent.stop() == 0
        down = time.monotonic()
        await asyncio.sleep(AFTER + 1)  # the agent is down for longer than the wait; the lines continue
        written_while_down = int((time.monotonic() - down) / 0.25) - 2
        agent.start()
        await agent.wait_ready()
        # the backlog read (its lines count for when they were written), then beats for another wait
        await wait_until(lambda: matches(agent, "heartbeat-missing") >= written_while_down + AFTER * 4 + 4,
                         AFTER + 15, "the backlog and the new heartbeats read")
    finally:
        stop.set()
        await beating
    assert titled(fake, "heartbeat-missing") == []
    assert agent.stop() == 0


async def test_lines_stopping_while_the_agent_is_down_alert_at_the_right_moment(
        agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    log.write("heartbeat ok")
    await wait_until(lambda: matches(agent, "heartbeat-missing") >= 1, 10, "first heartbeat read")
    assert agent.stop() == 0
    for _ in range(3):  # written while the agent is down, stamped
        log.write("heartbeat ok")
        await asyncio.sleep(0.3)
    last = time.monotonic()
    await asyncio.sleep(1.5)
    agent.start()
    restarted = time.monotonic()
    await fake.wait_until(lambda: titled(fake, "heartbeat-missing", "Critical"), AFTER + 15)
    fired_after = time.monotonic() - last
    # judged by the last line's own timestamp, not by the restart (that would be >= 1.5 + AFTER)
    assert fired_after < (restarted - last) + AFTER, fired_after
    assert fired_after >= AFTER - 0.3
    assert agent.stop() == 0


async def test_a_silence_spanning_a_restart_is_caught_from_the_stored_clock(
        agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    log.write("heartbeat ok", stamped=False)  # no timestamp: the clock is when it was read
    await wait_until(lambda: matches(agent, "heartbeat-missing") >= 1, 10, "heartbeat read")
    read = time.monotonic()
    assert agent.stop() == 0
    await asyncio.sleep(AFTER + 1)
    assert titled(fake, "heartbeat-missing") == []  # nobody was watching
    agent.start()
    await agent.wait_ready()
    ready = time.monotonic()
    await fake.wait_until(lambda: titled(fake, "heartbeat-missing", "Critical"), 10)
    assert time.monotonic() - ready < TICK_SLACK  # overdue since before the restart: at once, not AFTER later
    assert time.monotonic() - read >= AFTER
    assert agent.stop() == 0


async def test_a_reload_keeps_the_clock(agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    log.write("heartbeat ok")
    await wait_until(lambda: matches(agent, "heartbeat-missing") >= 1, 10, "heartbeat read")
    seen = time.monotonic()
    await asyncio.sleep(1.0)
    agent.write_config(config(fake.url, generation=2))  # hot reload (a label changes)
    await wait_until(lambda: agent.get("/status")[1].get("last_reload"), 10, "the reload applied")
    await fake.wait_until(lambda: titled(fake, "heartbeat-missing", "Critical"), AFTER + 10)
    assert time.monotonic() - seen <= AFTER + TICK_SLACK  # not AFTER after the reload
    assert agent.stop() == 0


async def test_rotation_raises_nothing(tmp_path: Path, agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{log.path} {{\n  rotate 5\n  create\n  missingok\n}}\n")
    stop = asyncio.Event()
    beating = asyncio.create_task(keep_beating(log, stop, every=0.1))
    try:
        for _ in range(4):
            await asyncio.sleep(0.7)
            subprocess.run(["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)], check=True)
        rotated = matches(agent, "heartbeat-missing")
        await wait_until(lambda: matches(agent, "heartbeat-missing") >= rotated + AFTER * 10 + 5, 15,
                         "heartbeats read across rotations and one more wait")
    finally:
        stop.set()
        await beating
    assert int(agent.get("/status")[1]["sources"]["app"]["stats"]["rotations"]) >= 4
    assert titled(fake, "heartbeat-missing") == []
    assert agent.stop() == 0


async def test_expect_only_the_late_one_alerts_and_its_finish_resolves(agent_and_log: Any,
                                                                       fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    log.write("backup db started")
    log.write("backup files started")
    log.write("backup files finished")
    started = time.monotonic()
    await fake.wait_until(lambda: titled(fake, "backup"), AFTER + 10)
    assert time.monotonic() - started >= AFTER - 0.3
    late = titled(fake, "backup")
    assert [(e["title_rule"], e["event_status"], e["labels"]["job"]) for e in late] == \
        [("backup db did not finish", "Warning", "db")]
    assert "not finished within 3s" in late[0]["description"]
    log.write("backup db finished")
    await fake.wait_until(lambda: titled(fake, "backup db", "Ok"), 10)
    assert "Finished after" in titled(fake, "backup db", "Ok")[0]["description"]
    assert titled(fake, "backup files") == []
    assert fake.violations == []
    assert agent.stop() == 0


async def test_expect_a_pending_wait_survives_a_restart(agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    log.write("backup nightly started")
    await wait_until(lambda: matches(agent, "backup-late") >= 1, 10, "the start read")
    began = time.monotonic()
    assert agent.stop() == 0
    await asyncio.sleep(1.0)
    agent.start()
    await fake.wait_until(lambda: titled(fake, "backup nightly", "Warning"), AFTER + 15)
    assert AFTER - 0.3 <= time.monotonic() - began <= AFTER + 1.0 + TICK_SLACK + 2  # from the start, not the restart
    assert agent.stop() == 0


async def test_expect_a_pending_wait_survives_a_reload(agent_and_log: Any, fake: FakeFlashduty) -> None:
    agent, log = agent_and_log
    log.write("backup weekly started")
    await wait_until(lambda: matches(agent, "backup-late") >= 1, 10, "the start read")
    began = time.monotonic()
    agent.write_config(config(fake.url, generation=3))
    await wait_until(lambda: agent.get("/status")[1].get("last_reload"), 10, "the reload applied")
    await fake.wait_until(lambda: titled(fake, "backup weekly", "Warning"), AFTER + 10)
    assert time.monotonic() - began <= AFTER + TICK_SLACK
    log.write("backup weekly finished")
    await fake.wait_until(lambda: titled(fake, "backup weekly", "Ok"), 10)
    assert agent.stop() == 0
