"""The whole pipeline in a real process: log file -> rules -> alerts -> outbox -> sender -> endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, wait_until
from tests.fake_flashduty import FakeFlashduty, validate_event

CONFIG = """
state_dir: ./state
labels: {{env: test}}
flashduty:
  push_url: {url}
  retry_initial: 50ms
  retry_max: 500ms
health:
  listen: 127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}
alerts:
  max_events_per_key_per_minute: 1000
  max_events_per_minute: 100000
logs:
  - name: app
    paths: ["./logs/*.log"]
    start_at: beginning
    rules:
      - name: db-timeout
        match: 'timeout after (?P<ms>\\d+)ms on (?P<db>\\w+) id=(?P<id>\\d+)'
        identity: [id]
        severity: Critical
        title: "DB timeout on {{db}}"
        description: "{{line}}"
        labels: {{class: db}}
        resolve: {{after: 1h}}
"""


def write_lines(path: Path, start: int, count: int, *, noise: bool = True) -> None:
    with path.open("a") as f:
        for i in range(start, start + count):
            if noise:
                f.write(f"INFO request {i} served in 3ms\n")
            f.write(f"ERROR timeout after {i}ms on orders id={i}\n")


def ids(events: list[dict]) -> list[int]:
    return [int(e["labels"]["id"]) for e in events if e["event_status"] != "Ok"]


async def test_matching_line_becomes_valid_event_and_noise_does_not(tmp_path: Path, fake: FakeFlashduty,
                                                                    agent_process) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    log.write_text("")
    agent = agent_process(CONFIG.format(url=fake.url))
    agent.start()
    await agent.wait_ready()
    with log.open("a") as f:
        f.write("INFO all good\nERROR timeout after 250ms on orders id=7\nDEBUG timeout after x\n")
    events = await fake.wait_for_events(1)
    event = events[0]
    assert validate_event(event) == []
    assert event["event_status"] == "Critical"
    assert event["title_rule"] == "DB timeout on orders"
    assert event["description"] == "ERROR timeout after 250ms on orders id=7"
    labels = event["labels"]
    assert labels["env"] == "test" and labels["class"] == "db" and labels["rule"] == "db-timeout"
    assert labels["source"] == "app" and labels["path"].endswith("app.log") and labels["host"]
    assert fake.violations == []
    # a later file matching the glob is picked up from its beginning
    (tmp_path / "logs" / "new.log").write_text("ERROR timeout after 9ms on users id=8\n")
    await fake.wait_for_events(2)
    assert ids(fake.events) == [7, 8]
    assert agent.stop() == 0
    assert len(fake.events) == 2  # the noise lines never produced anything
    assert "test-key" not in agent.logs()  # the integration key is never logged


async def test_restart_delivers_lines_written_while_down_and_nothing_twice(tmp_path: Path, fake: FakeFlashduty,
                                                                           agent_process) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    write_lines(log, 0, 50)
    agent = agent_process(CONFIG.format(url=fake.url))
    agent.start()
    await agent.wait_ready()
    await fake.wait_for_events(50)
    assert agent.stop() == 0
    write_lines(log, 50, 50)  # written while the agent is down
    agent.start()
    await agent.wait_ready()
    await fake.wait_for_events(100)
    write_lines(log, 100, 10)
    await fake.wait_for_events(110)
    assert agent.stop() == 0
    assert sorted(ids(fake.events)) == list(range(110))  # none lost, none twice


async def test_kill9_mid_stream_loses_nothing(tmp_path: Path, fake: FakeFlashduty, agent_process) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    agent = agent_process(CONFIG.format(url=fake.url))
    log.write_text("")
    agent.start()
    await agent.wait_ready()
    write_lines(log, 0, 300, noise=False)
    await wait_until(lambda: len(fake.events) >= 20, 20, "some deliveries")
    agent.kill9()
    agent.start()
    await agent.wait_ready()
    await wait_until(lambda: len(set(ids(fake.events))) >= 300, 30, "all 300 distinct events")
    agent.stop()
    got = ids(fake.events)
    assert sorted(set(got)) == list(range(300))
    # duplicates are bounded by what was in flight when the process died (concurrency 4)
    assert len(got) - len(set(got)) <= 4


async def test_endpoint_down_then_up_delivers_everything_in_order_per_key(tmp_path: Path, fake: FakeFlashduty,
                                                                         agent_process) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    log.write_text("")
    config = CONFIG.format(url=fake.url).replace("identity: [id]", "identity: []").replace(
        "resolve: {after: 1h}", "resolve: {match: 'recovered (?P<x>\\w+)'}\n        repeat_interval: 0")
    agent = agent_process(config)
    agent.start()
    await agent.wait_ready()
    await fake.stop()  # endpoint down: connection refused
    with log.open("a") as f:
        f.write("ERROR timeout after 1ms on orders id=1\nrecovered now\n")  # fire then resolve: same key
        f.write("ERROR timeout after 2ms on orders id=2\n")  # fires again after the recovery
    status = {}
    await wait_until(lambda: (status.update(agent.get("/status")[1]) or True) and status["outbox"]["depth"] == 3,
                     15, "3 events queued while the endpoint is down")
    await fake.start()
    await fake.wait_for_events(3, timeout=20)
    key = fake.events[0]["alert_key"]
    assert [e["event_status"] for e in fake.events_for(key)] == ["Critical", "Ok", "Critical"]
    assert agent.stop() == 0


async def test_dry_run_prints_exact_json_body(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text("ERROR timeout after 5ms on orders id=3\n")
    config = CONFIG.format(url="").replace("push_url: \n", "push_url: ''\n")
    (tmp_path / "config.yaml").write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", "config.yaml"], cwd=tmp_path,
                            env={"DUTYTAIL_TEST_HEALTH_PORT": "0", "PATH": "/usr/bin:/bin",
                                 "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the first event is printed
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    body = json.loads(line)
    assert validate_event(body) == []
    assert body["title_rule"] == "DB timeout on orders" and body["event_status"] == "Critical"
    assert proc.returncode == 0, err.decode()
    assert b'"agent_ready"' in err  # logs went to stderr, stdout holds only event bodies


async def test_line_written_right_after_ready_is_delivered_with_start_at_end(tmp_path: Path, fake: FakeFlashduty,
                                                                            agent_process) -> None:
    """/readyz waits for the first scan: with many files, a line appended the moment the agent says ready
    must not be taken for history (start_at: end fixes where reading starts when a file is first opened)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    for i in range(400):
        (logs / f"svc-{i:03d}.log").write_text("ERROR timeout after 1ms on old id=1\n")  # history: skipped
    agent = agent_process(CONFIG.format(url=fake.url).replace("start_at: beginning", "start_at: end"))
    agent.start()
    await agent.wait_ready()
    with (logs / "svc-399.log").open("a") as f:
        f.write("ERROR timeout after 5ms on orders id=42\n")
    await fake.wait_for_events(1, timeout=15)
    assert ids(fake.events) == [42]
    assert agent.stop() == 0


async def test_batches_matched_ahead_reach_the_alert_engine_in_file_order(tmp_path: Path, fake: FakeFlashduty,
                                                                          agent_process) -> None:
    """A backlog's batches are matched several at a time in worker threads; the alert engine must still see
    them in file order, or fire/resolve pairs of one alert would be lost or swapped."""
    logs = tmp_path / "logs"
    logs.mkdir()
    pairs = 300
    with (logs / "app.log").open("w") as f:
        for i in range(pairs):  # ~150 bytes per pair: 4 KiB batches split the pairs across ~12 batches
            f.write(f"ERROR timeout after {i}ms on orders id=0 seq={i:04d} {'.' * 40}\n")
            f.write(f"recovered orders seq={i:04d} {'.' * 40}\n")
    config = CONFIG.format(url=fake.url).replace("identity: [id]", "identity: []").replace(
        "resolve: {after: 1h}", "resolve: {match: 'recovered (?P<x>\\w+)'}").replace(
        'paths: ["./logs/*.log"]', 'paths: ["./logs/*.log"]\n    read_chunk_bytes: 4KiB')
    agent = agent_process(config)
    agent.start()
    await agent.wait_ready()
    await fake.wait_for_events(2 * pairs, timeout=60)
    assert agent.stop() == 0
    assert [e["event_status"] for e in fake.events] == ["Critical", "Ok"] * pairs
    fired = [int(e["description"].split("seq=")[1][:4]) for e in fake.events if e["event_status"] == "Critical"]
    assert fired == list(range(pairs))
