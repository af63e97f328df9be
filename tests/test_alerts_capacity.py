"""Alert capacity (alerts.max_open_alerts): at the cap a new identity is suppressed while open alerts keep
working; in a real agent a backlog of many distinct alerts keeps memory bounded, and nothing is lost when
the alerts are about to resolve (the source pauses instead)."""

from __future__ import annotations

from pathlib import Path

from tests.alerts_helpers import T0, feed, make_engine, rule, statuses, tick
from tests.conftest import AgentProcess, wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import metric


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


def test_crowded_from_half_the_capacity_and_the_next_quiet_resolve() -> None:
    engine = make_engine(max_open_alerts=8)
    quick, slow = [rule(resolve={"after": 30})], [rule(name="slow", resolve={"after": 600})]
    assert not engine.crowded() and engine.next_quiet_resolve() is None
    feed(engine, slow, "timeout on s", 0)
    for i in range(3):
        feed(engine, quick, f"timeout on q{i}", 10 + i)
    assert engine.crowded()  # 4 of 8
    assert engine.next_quiet_resolve() == T0 + 40  # q0's quiet period ends first
    tick(engine, 43)
    assert not engine.crowded() and engine.next_quiet_resolve() == T0 + 600


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
  max_open_alerts: {cap}
logs:
  - name: jobs
    paths: ["./logs/*.log"]
    start_at: beginning
    rules:
      - name: job-failed
        match: 'job (?P<id>\\d+) failed'
        identity: [id]
        resolve: {{after: {resolve_after}}}
"""


async def start_with_jobs(tmp_path: Path, fake: FakeFlashduty, agent_process, *, jobs: int, cap: int,
                          resolve_after: str) -> AgentProcess:
    """An agent whose log already holds ``jobs`` failed jobs, each a distinct alert."""
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "jobs.log").write_text("".join(f"worker: job {i} failed: exit status 1\n" for i in range(jobs)))
    agent = agent_process(CONFIG.format(url=fake.url, cap=cap, resolve_after=resolve_after))
    agent.start()
    await agent.wait_ready()
    return agent


async def test_backlog_of_quickly_resolving_alerts_pauses_the_source_and_loses_nothing(
        tmp_path: Path, fake: FakeFlashduty, agent_process) -> None:
    agent = await start_with_jobs(tmp_path, fake, agent_process, jobs=60, cap=20, resolve_after="1s")
    await fake.wait_for_events(120, timeout=60)
    by_key: dict[str, list[str]] = {}
    for event in fake.events:
        by_key.setdefault(event["alert_key"], []).append(event["event_status"])
    assert len(by_key) == 60 and all(seq == ["Warning", "Ok"] for seq in by_key.values())
    status, text = agent.get("/metrics")
    assert status == 200
    assert (metric(text, "dutytail_source_paused_seconds_total", source="jobs") or 0) > 0
    assert metric(text, "dutytail_events_suppressed_total", reason="max_open_alerts") is None  # never counted
    assert agent.stop() == 0


async def test_at_capacity_new_alerts_are_suppressed_counted_and_summarised(
        tmp_path: Path, fake: FakeFlashduty, agent_process) -> None:
    agent = await start_with_jobs(tmp_path, fake, agent_process, jobs=10, cap=4, resolve_after="1h")

    def summarised() -> bool:
        return any(e["labels"].get("rule") == "storm-control" for e in fake.events)

    await wait_until(summarised, timeout=20, what="the storm-control summary")
    jobs = [e for e in fake.events if e["labels"].get("rule") == "job-failed"]
    assert len(jobs) == 4
    summary = next(e for e in fake.events if e["labels"].get("rule") == "storm-control")
    assert "suppressed 6 event(s)" in summary["description"]
    _, text = agent.get("/metrics")
    assert metric(text, "dutytail_events_suppressed_total", reason="max_open_alerts") == 6
    assert agent.stop() == 0
    assert "alert_capacity_reached_new_alerts_suppressed" in agent.logs()
