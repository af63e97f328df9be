"""Hot reload (agent/app/reload.py, ``Agent.reload``): a valid in-place edit is applied live, keeping the
sources' offsets and the open alerts, and a removed source resolves its alerts; an invalid edit keeps the
running config and reports where the error is; an edit made while the agent starts is applied.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from agent.outbox import Outbox, OutboxConfig
from tests.conftest import AgentProcess
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    AUDIT_SOURCE,
    DB_MATCH,
    DISK_RULE,
    RELOAD_DEADLINE,
    append,
    config_text,
    events_named,
    eventually,
    fetch,
    has_open_file,
    http_get,
    location_of,
    logs_dir,
    metric,
    metrics,
    outbox_empty,
    reloads,
    started,
    status,
    titles,
    wait_reloaded,
)

# --- a valid edit ---------------------------------------------------------------------------------------------


async def test_valid_edit_is_applied_live_keeping_offsets_and_open_alerts(tmp_path: Path, fake: FakeFlashduty,
                                                                           agent_process: Any) -> None:
    logs, app = logs_dir(tmp_path)
    audit = logs / "audit.log"
    audit.write_text("")
    agent = await started(agent_process, config_text(fake.url))
    assert agent.proc is not None
    pid = agent.proc.pid

    append(app, "ERROR timeout on orders id=1")
    (first,) = await fake.wait_for_events(1)
    assert first["title_rule"] == "v1 timeout on orders"
    key1 = first["alert_key"]

    # Edit in place: new title, a second rule, a new source; app's paths change too, so the app source is
    # restarted and has to resume from its committed offsets (not from the beginning: start_at: beginning).
    before = await reloads(agent)
    agent.write_config(config_text(fake.url, title="v2 timeout on {db}",
                                   app_paths='["./logs/app.log", "./logs/extra-*.log"]',
                                   extra_rules=DISK_RULE, extra_sources=AUDIT_SOURCE))
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    assert set((await status(agent))["sources"]) == {"app", "audit"}
    assert [r["source"] for r in events_named(agent, "source_started")] == ["app", "app", "audit"]  # app restarted

    append(app, "ERROR timeout on orders id=2", "ERROR timeout on orders id=1", "WARN disk full on /var")
    append(audit, "audit: denied user=bob")
    await fake.wait_for_events(4)
    await eventually(lambda: outbox_empty(agent), 10, "outbox drained")
    by_title = {e["title_rule"]: e for e in fake.events}
    assert set(by_title) == {"v1 timeout on orders", "v2 timeout on orders", f"disk full on {first['labels']['host']}",
                             "access denied for bob"}, titles(fake)
    audit_key = by_title["access denied for bob"]["alert_key"]

    snapshot = await status(agent)
    # id=1 was read once before the reload and once after: had the restarted source re-read app.log from
    # its beginning, the match count would be 4 and the alert's count 3.
    assert snapshot["rules"]["app/db-timeout"] == 3, snapshot["rules"]
    open_alerts = {a["alert_key"]: a for a in snapshot["alerts"]}
    assert open_alerts[key1]["count"] == 2  # the alert opened before the reload is still the same open alert
    assert fake.statuses_for(key1) == ["Critical"]  # ...so its repeat was not sent again

    # Remove the audit source: it stops, and its open alert is resolved with an Ok that says why.
    before = await reloads(agent)
    agent.write_config(config_text(fake.url, title="v2 timeout on {db}",
                                   app_paths='["./logs/app.log", "./logs/extra-*.log"]', extra_rules=DISK_RULE))
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    await fake.wait_until(lambda: fake.statuses_for(audit_key) == ["Warning", "Ok"], 5)
    assert "removed" in fake.events_for(audit_key)[-1]["description"]
    snapshot = await status(agent)
    assert set(snapshot["sources"]) == {"app"}
    assert metric(await metrics(agent), "dutytail_lines_read_total", source="audit") is None
    assert {a["alert_key"] for a in snapshot["alerts"]} >= {key1}  # app's alerts were not touched
    assert fake.statuses_for(key1) == ["Critical"]

    # No restart happened: same process, one startup, two applied reloads.
    assert agent.proc.poll() is None and agent.proc.pid == pid
    assert len(events_named(agent, "agent_ready")) == 1
    assert len(events_named(agent, "config_reloaded")) == 2
    assert fake.violations == []


# --- an invalid edit ------------------------------------------------------------------------------------------


async def test_invalid_edit_keeps_old_config_and_reports_where(tmp_path: Path, fake: FakeFlashduty,
                                                               agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    good = config_text(fake.url)
    agent = await started(agent_process, good)
    path = str(agent.config_path)

    bad_regex = good.replace(DB_MATCH, r"timeout on (?P<db>\w+")
    line, col = location_of(bad_regex, "'timeout on")
    agent.write_config(bad_regex)

    async def error_is(prefix: str) -> str | None:
        error = (await status(agent))["config_error"]
        return error if error and error.startswith(prefix) else None

    expected = f"{path}:{line}:{col}: logs[0].rules[0].match: invalid regex"
    error = await eventually(lambda: error_is(expected), RELOAD_DEADLINE, "config_error for the bad regex")
    text = await metrics(agent)
    assert metric(text, "dutytail_config_error") == 1
    invalid = metric(text, "dutytail_config_reloads_total", result="invalid")
    assert invalid and invalid >= 1
    assert not metric(text, "dutytail_config_reloads_total", result="applied")
    assert (await fetch(agent, "/healthz")).json()["config_error"] == error
    assert (await fetch(agent, "/readyz")).status == 200  # still serving with the old config
    logged = events_named(agent, "config_invalid_keeping_previous")
    assert logged and logged[-1]["level"] == "error" and logged[-1]["errors"] == [error]

    append(app, "ERROR timeout on orders id=1")  # the old rule still runs
    (event,) = await fake.wait_for_events(1)
    assert event["title_rule"] == "v1 timeout on orders"

    typo = good.replace('        description: "{line}"\n', '        description: "{line}"\n        titel: "typo"\n')
    line, col = location_of(typo, "titel:")
    agent.write_config(typo)
    await eventually(lambda: error_is(f"{path}:{line}:{col}: logs[0].rules[0].titel: unknown key"),
                     RELOAD_DEADLINE, "config_error for the unknown key")
    assert (metric(await metrics(agent), "dutytail_config_reloads_total", result="invalid") or 0) > invalid

    agent.write_config(config_text(fake.url, title="v2 timeout on {db}"))
    await wait_reloaded(agent, 0, RELOAD_DEADLINE)
    assert (await status(agent))["config_error"] is None
    assert metric(await metrics(agent), "dutytail_config_error") == 0
    append(app, "ERROR timeout on orders id=2")
    await fake.wait_for_events(2)
    assert titles(fake) == ["v1 timeout on orders", "v2 timeout on orders"]
    assert agent.proc is not None and agent.proc.poll() is None


async def test_edit_during_startup_is_applied(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    # Widen the startup window deterministically: the agent's first commit waits while another process
    # (here: this test) holds the store's write lock, after it has loaded its config.
    state = tmp_path / "state"
    store = Outbox(state, OutboxConfig())
    await store.open()
    await store.close()
    lock = sqlite3.connect(state / "outbox.db", isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        agent: AgentProcess = agent_process(config_text(fake.url))
        agent.start()
        assert agent.proc is not None
        pid = agent.proc.pid
        await eventually(lambda: has_open_file(pid, "/state/outbox.db"), 30, "the agent to open its store")
        agent.write_config(config_text(fake.url, title="v2 timeout on {db}"))  # deployed while it starts
    finally:
        lock.rollback()
        lock.close()
    await agent.wait_ready()
    await wait_reloaded(agent, 0, RELOAD_DEADLINE)
    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    assert event["title_rule"] == "v2 timeout on orders"


async def test_a_reload_with_many_rules_never_stops_the_event_loop(tmp_path: Path, fake: FakeFlashduty,
                                                                   agent_process: Any) -> None:
    """Compiling rules takes seconds for hundreds of them (5,000 blocked the loop for 14.7 s: /healthz, the
    sender and systemd's watchdog all waited). It runs off the loop: the agent answers throughout."""
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))
    many = "".join(f"      - name: code-{i}\n        match: 'failure code {i} in (?P<mod>\\w+)'\n" for i in range(800))
    before = await reloads(agent)
    agent.write_config(config_text(fake.url, extra_rules=many))
    answered = 0
    while await reloads(agent) <= before:
        # a 2 s timeout per request: a blocked event loop fails the test here
        assert (await asyncio.to_thread(http_get, agent.health_url + "/healthz", None, 2.0)).status == 200
        answered += 1
    assert answered >= 3, "the reload was over before it could be watched"
    append(app, "failure code 799 in billing")
    await eventually(lambda: "code-799" in [e["labels"].get("rule") for e in fake.events], 10, "the new rule")
    assert agent.stop() == 0
