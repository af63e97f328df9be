"""Operating the agent as systemd runs it: hot reload (in-place edits, invalid and half-written files,
atomic renames, SIGHUP), sd_notify, the health endpoints, the `status`/`send-test` commands, secret
redaction and `push_url_file`.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines. CLI commands whose own
mechanics are not the subject run in-process (same `agent.cli.main`, cheaper than a subprocess); three bug
reproductions use an in-process Agent, Outbox or OutputSender because that makes them deterministic.

Tests marked ``xfail(strict=True)`` demonstrate agent bugs (the reason says which); they turn into failures
(XPASS) once a fix lands, so the marker gets removed with the fix.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from agent import __version__
from agent import cli as dutytail_cli
from agent.app import Agent
from agent.config import parse_config
from agent.outbox import Commit, Outbox, OutboxConfig, QueuedEvent
from agent.sender import OutputConfig, OutputSender
from tests.conftest import AgentProcess, free_port, wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    AUDIT_SOURCE,
    DB_MATCH,
    DISK_RULE,
    NotifySocket,
    append,
    awaiting,
    cancel_and_wait,
    config_text,
    events_named,
    eventually,
    fetch,
    has_open_file,
    location_of,
    metric,
    metrics,
    reloads,
    run_cli,
    status,
    wait_config_watch_armed,
    wait_reloaded,
)

# A valid edit must take effect "within about two seconds"; the slack covers a loaded CI machine.
RELOAD_DEADLINE = 3.5


def _logs_dir(tmp_path: Path) -> tuple[Path, Path]:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text("")
    return logs, app


async def _started(agent_process: Any, config: str, **kw: Any) -> AgentProcess:
    agent: AgentProcess = agent_process(config, **kw)
    agent.start()
    await agent.wait_ready()
    await wait_config_watch_armed(agent)
    return agent


def _titles(fake: FakeFlashduty) -> list[str]:
    return [e["title_rule"] for e in fake.events]


async def _cli(agent: AgentProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
               *args: str) -> tuple[int, str]:
    """`dutytail ARGS -c config.yaml` in this process (in a thread: the fake must keep answering), as the agent's
    directory and environment would run it; cheaper than a subprocess where the command is not the subject."""
    monkeypatch.setenv("DUTYTAIL_TEST_HEALTH_PORT", str(agent.health_port))
    monkeypatch.chdir(agent.workdir)
    capsys.readouterr()
    code = await asyncio.to_thread(dutytail_cli.main, [*args, "-c", "config.yaml"])
    out, err = capsys.readouterr()
    return code, out + err


async def _outbox_empty(agent: AgentProcess) -> bool:
    return (await status(agent))["outbox"]["depth"] == 0


# --- 1. hot reload of a valid edit ---------------------------------------------------------------------


async def test_valid_edit_is_applied_live_keeping_offsets_and_open_alerts(tmp_path: Path, fake: FakeFlashduty,
                                                                           agent_process: Any) -> None:
    logs, app = _logs_dir(tmp_path)
    audit = logs / "audit.log"
    audit.write_text("")
    agent = await _started(agent_process, config_text(fake.url))
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
    await eventually(lambda: _outbox_empty(agent), 10, "outbox drained")
    by_title = {e["title_rule"]: e for e in fake.events}
    assert set(by_title) == {"v1 timeout on orders", "v2 timeout on orders", f"disk full on {first['labels']['host']}",
                             "access denied for bob"}, _titles(fake)
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


# --- 2. an invalid edit --------------------------------------------------------------------------------


async def test_invalid_edit_keeps_old_config_and_reports_where(tmp_path: Path, fake: FakeFlashduty,
                                                               agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    good = config_text(fake.url)
    agent = await _started(agent_process, good)
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
    assert _titles(fake) == ["v1 timeout on orders", "v2 timeout on orders"]
    assert agent.proc is not None and agent.proc.poll() is None


async def test_edit_during_startup_is_applied(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
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


# --- 3. half-written files -------------------------------------------------------------------------------


async def test_half_written_file_never_stops_the_agent_and_final_version_applies(tmp_path: Path, fake: FakeFlashduty,
                                                                                 agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    agent = await _started(agent_process, config_text(fake.url))

    # A slow writer: the file is cut inside the quoted regex (the versions share everything before the cut,
    # so rewriting that prefix and truncating never shows an empty file) until the agent has looked at it.
    v2 = config_text(fake.url, title="v2 timeout on {db}")
    cut = v2.index("(?P<db>")
    with agent.config_path.open("r+") as f:
        f.write(v2[:cut])
        f.truncate()
        f.flush()

        async def error() -> str | None:
            return (await status(agent))["config_error"]

        seen = await eventually(error, RELOAD_DEADLINE, "the agent to notice the half-written file")
        assert seen.startswith(f"{agent.config_path}:") and "invalid YAML" in seen
        append(app, "ERROR timeout on orders id=1")
        await fake.wait_for_events(1)  # meanwhile the old config keeps working
        f.write(v2[cut:])
    await wait_reloaded(agent, 0, RELOAD_DEADLINE)
    assert (await status(agent))["config_error"] is None

    # A fast writer: the rest follows 50 ms later, before or after the agent reads; the end state counts.
    v3 = config_text(fake.url, title="v3 timeout on {db}")
    before = await reloads(agent)
    with agent.config_path.open("r+") as f:
        f.write(v3[:cut])
        f.truncate()
        f.flush()
        await asyncio.sleep(0.05)  # part of the scenario (a writer pausing), not a wait for the agent
        f.write(v3[cut:])
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    append(app, "ERROR timeout on orders id=2")
    await fake.wait_for_events(2)
    assert _titles(fake) == ["v1 timeout on orders", "v3 timeout on orders"]
    assert (await status(agent))["config_error"] is None
    assert agent.proc is not None and agent.proc.poll() is None


async def test_config_truncated_to_empty_changes_nothing(tmp_path: Path, fake: FakeFlashduty,
                                                         agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    agent = await _started(agent_process, config_text(fake.url))
    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)

    agent.config_path.write_text("")  # truncated: the writer has not written anything yet

    async def reacted() -> bool:
        text = await metrics(agent)
        return bool(metric(text, "dutytail_config_reloads_total", result="applied")
                    or metric(text, "dutytail_config_error"))

    try:
        await eventually(reacted, RELOAD_DEADLINE, "the agent to look at the empty file")
    except AssertionError:
        pass  # ignoring an empty file without a word is fine too: then nothing may have changed
    snapshot = await status(agent)
    assert set(snapshot["sources"]) == {"app"}, "sources were stopped by an empty config file"
    assert not snapshot["dry_run"], "the output was switched to dry run by an empty config file"
    assert [a["alert_key"] for a in snapshot["alerts"]] == [event["alert_key"]], "open alert was resolved"


# --- 4. atomic rename deploys ----------------------------------------------------------------------------


async def test_atomic_rename_deploys_are_applied(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    agent = await _started(agent_process, config_text(fake.url))
    inode = agent.config_path.stat().st_ino

    # config.yaml.tmp + rename (Salt, Puppet, `install`)
    tmp = agent.config_path.with_name("config.yaml.tmp")
    tmp.write_text(config_text(fake.url, title="v2 timeout on {db}"))
    before = await reloads(agent)
    os.replace(tmp, agent.config_path)
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    assert agent.config_path.stat().st_ino != inode
    append(app, "ERROR timeout on orders id=1")
    await fake.wait_for_events(1)

    # Ansible's way: a randomly named hidden temp file in the same directory, renamed over the target
    tmp = agent.config_path.with_name(".ansible_tmp8f3k2config.yaml")
    tmp.write_text(config_text(fake.url, title="v3 timeout on {db}"))
    before = await reloads(agent)
    os.replace(tmp, agent.config_path)
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    append(app, "ERROR timeout on orders id=2")
    await fake.wait_for_events(2)

    # the watch follows the new inode: a later in-place edit is seen too; its outbox change needs a restart
    before = await reloads(agent)
    agent.write_config(config_text(fake.url, title="v4 timeout on {db}") + "outbox: {max_bytes: 64MiB}\n")
    await wait_reloaded(agent, before, RELOAD_DEADLINE)
    append(app, "ERROR timeout on orders id=3")
    await fake.wait_for_events(3)
    assert _titles(fake) == ["v2 timeout on orders", "v3 timeout on orders", "v4 timeout on orders"]
    needs_restart = events_named(agent, "reload_ignored_needs_restart")
    assert needs_restart and needs_restart[0]["keys"] == ["state_dir", "outbox"]


# --- 5. SIGHUP -------------------------------------------------------------------------------------------


async def test_sighup_reloads_what_the_watcher_cannot_see(tmp_path: Path, fake: FakeFlashduty,
                                                          agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    agent: AgentProcess = agent_process(config_text(fake.url))
    # config.yaml is a symlink to a release file; switching the symlink is invisible to the watcher, which
    # follows the file it resolved at start: only SIGHUP (`systemctl reload`) can apply it.
    releases = tmp_path / "releases"
    releases.mkdir()
    (releases / "v1.yaml").write_text(agent.config_path.read_text())
    agent.config_path.unlink()
    agent.config_path.symlink_to(releases / "v1.yaml")
    agent.start()
    await agent.wait_ready()
    await wait_config_watch_armed(agent)  # it watches releases/v1.yaml
    assert agent.proc is not None

    (releases / "v2.yaml").write_text(config_text(fake.url, title="v2 timeout on {db}"))
    link = tmp_path / "config.yaml.new"
    link.symlink_to(releases / "v2.yaml")
    os.replace(link, agent.config_path)
    agent.proc.send_signal(signal.SIGHUP)
    await wait_reloaded(agent, 0, RELOAD_DEADLINE)
    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    assert event["title_rule"] == "v2 timeout on orders"

    # SIGHUP on an invalid file: counted as invalid, reported, the running config stays
    (releases / "v3.yaml").write_text("logs: [")
    link.symlink_to(releases / "v3.yaml")
    os.replace(link, agent.config_path)
    agent.proc.send_signal(signal.SIGHUP)
    await wait_reloaded(agent, 0, RELOAD_DEADLINE, result="invalid")
    assert (await status(agent))["config_error"].startswith(f"{agent.config_path}:1:")
    append(app, "ERROR timeout on orders id=2")
    await fake.wait_for_events(2)
    assert _titles(fake) == ["v2 timeout on orders"] * 2
    assert agent.proc.poll() is None


async def test_reading_the_config_does_not_make_the_agent_reread_it(tmp_path: Path, fake: FakeFlashduty,
                                                                    agent_process: Any) -> None:
    _logs_dir(tmp_path)
    agent = await _started(agent_process, config_text(fake.url))
    opened: list[float] = []
    target = str(agent.config_path)

    class CountOpens(FileSystemEventHandler):
        def on_opened(self, event: FileSystemEvent) -> None:
            if event.src_path == target:
                opened.append(time.monotonic())

    observer = Observer()
    observer.schedule(CountOpens(), str(tmp_path), recursive=False)
    observer.start()
    try:
        agent.config_path.read_text()  # what `dutytail status -c config.yaml` (or `cat`) does first
        await wait_until(lambda: len(opened) >= 1, 5, "this test's own read to be seen")
        mark = len(opened)
        try:  # a bounded observation window: an idle agent has no reason to open its config at all
            await wait_until(lambda: len(opened) - mark >= 4, 2.0, "repeated reads")
        except AssertionError:
            pass
        assert len(opened) - mark <= 1, f"the agent re-read config.yaml {len(opened) - mark} times in 2 s"
    finally:
        observer.stop()
        await asyncio.to_thread(observer.join, 5)


# --- 6. sd_notify ----------------------------------------------------------------------------------------


async def test_sd_notify_ready_reloading_watchdog_stopping(tmp_path: Path, fake: FakeFlashduty,
                                                           agent_process: Any) -> None:
    _logs_dir(tmp_path)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        agent: AgentProcess = agent_process(config_text(fake.url),
                                            env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
        agent.env.pop("WATCHDOG_PID", None)
        agent.start()
        (ready,) = await eventually(lambda: notify.with_key("READY", "1"), 30, "READY=1")
        assert ready.fields["STATUS"] == f"dutytail {__version__}: 1 sources, 0 checks"
        # systemd starts dependent units on READY=1: the endpoints must already answer
        assert (await fetch(agent, "/readyz")).status == 200

        await wait_config_watch_armed(agent)

        mark = len(notify.messages)
        edited_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        agent.write_config(config_text(fake.url, title="v2 timeout on {db}"))

        def reload_done() -> bool:
            states = [m for m in notify.messages[mark:] if "READY" in m.fields or "RELOADING" in m.fields]
            return len(states) >= 2

        await eventually(reload_done, RELOAD_DEADLINE, "RELOADING=1 then READY=1")
        reloading, done = [m for m in notify.messages[mark:] if "READY" in m.fields or "RELOADING" in m.fields][:2]
        assert reloading.fields.get("RELOADING") == "1" and done.fields.get("READY") == "1"
        stamp = int(reloading.fields["MONOTONIC_USEC"])  # CLOCK_MONOTONIC is shared by all processes
        assert edited_usec <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

        # WatchdogSec=1s: pings every 0.5 s from the event loop, also across the reload
        await eventually(lambda: len(notify.with_key("WATCHDOG", "1")) >= 3, 5, "three WATCHDOG=1 pings")
        mark = len(notify.messages)
        assert agent.proc is not None
        # Its exit is not asserted: after a reload the agent re-reads its config in a loop (see
        # test_reading_the_config_does_not_make_the_agent_reread_it) and a stop then can hang (see
        # test_sender_task_stops_when_cancelled_during_a_wake_up for the mechanism); the fixture kills it.
        agent.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: notify.with_key("STOPPING", "1", since=mark), 5, "STOPPING=1")

        pings = [m.at for m in notify.with_key("WATCHDOG", "1")]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0, f"a gap between watchdog pings reached WatchdogSec: {gaps}"
        assert len(notify.with_key("READY", "1")) == 2  # start and the reload, nothing else
    finally:
        notify.close()


# --- 7. the endpoints ------------------------------------------------------------------------------------


async def test_endpoints_shapes_token_and_remote_listen(tmp_path: Path, fake: FakeFlashduty, agent_process: Any,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = _logs_dir(tmp_path)
    agent = await _started(agent_process, config_text(fake.url))
    append(app, "INFO fine", "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    await eventually(lambda: _outbox_empty(agent), 5, "outbox drained")

    r = await fetch(agent, "/healthz")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    health = r.json()
    assert health["status"] == "ok" and health["version"] == __version__
    assert health["uptime_seconds"] > 0
    assert health["outbox_depth"] == 0 and health["dead_letters"] == 0
    assert abs(health["last_successful_delivery"] - time.time()) < 60
    assert health["files_tailed"] == 1

    r = await fetch(agent, "/readyz")
    assert (r.status, r.json()) == (200, {"ready": True, "reasons": []})

    snapshot = (await fetch(agent, "/status")).json()
    (tailed,) = snapshot["sources"]["app"]["files"]
    assert tailed["path"].endswith("app.log") and tailed["offset"] == app.stat().st_size
    assert snapshot["rules"] == {"app/db-timeout": 1}
    (alert,) = snapshot["alerts"]
    assert alert["alert_key"] == event["alert_key"] and alert["source"] == "app" and alert["name"] == "db-timeout"
    assert snapshot["outbox"]["depth"] == 0 and snapshot["outbox"]["dead_letters"] == 0
    out = snapshot["outputs"]["default"]
    assert out["sent"] == 1 and out["failed"] == 0 and "integration_key=***" in out["url"]

    r = await fetch(agent, "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert metric(text, "dutytail_lines_read_total", source="app") == 2
    assert metric(text, "dutytail_rule_matches_total", source="app", rule="db-timeout") == 1
    assert metric(text, "dutytail_events_sent_total", output="default") == 1
    assert metric(text, "dutytail_outbox_depth") == 0
    assert metric(text, "dutytail_send_latency_seconds_bucket", output="default", le="+Inf") == 1
    assert metric(text, "dutytail_open_alerts") == 1
    assert metric(text, "dutytail_config_error") == 0
    assert "# TYPE dutytail_config_reloads_total counter" in text
    assert agent.stop() == 0

    # token: every endpoint wants the bearer header; `dutytail status` sends it from the config
    token = "ops-health-token-5f1c9e"
    agent = agent_process(config_text(fake.url, health_extra=f"  token: {token}\n"))
    agent.start()
    await eventually(lambda: _code(agent, "/healthz") == 401, 30, "the token-protected agent to answer 401")
    for _ in range(600):  # the endpoints answer before the first scan is done; ready comes a moment later
        if (await fetch(agent, "/readyz", token=token)).status == 200:
            break
        await asyncio.sleep(0.05)
    for path in ("/healthz", "/readyz", "/status", "/metrics"):
        assert (await fetch(agent, path)).status == 401, path
        assert (await fetch(agent, path, token="wrong")).status == 401, path
        assert (await fetch(agent, path, token=token)).status == 200, path
    code, shown = await _cli(agent, capsys, monkeypatch, "status")
    assert code == 0 and shown.startswith(f"dutytail {__version__}  ok"), shown
    assert token not in agent.logs()

    # a non-loopback listen address is refused unless allow_remote is set
    remote = tmp_path / "remote.yaml"
    remote.write_text("health:\n  listen: 0.0.0.0:8790\n")
    assert dutytail_cli.main(["check-config", "-c", str(remote)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{remote}:2:3: health: listening on 0.0.0.0 exposes host details; set allow_remote: true "
        "(and a token) to do so")
    remote.write_text("health:\n  listen: 0.0.0.0:8790\n  allow_remote: true\n  token: t0ken-for-remote\n")
    assert dutytail_cli.main(["check-config", "-c", str(remote)]) == 0
    assert "OK" in capsys.readouterr().out


def _code(agent: AgentProcess, path: str) -> int | None:
    try:
        return agent.get(path)[0]
    except OSError:
        return None


# --- 8. `dutytail status` and `dutytail send-test` -------------------------------------------------------


async def test_status_and_send_test_commands(tmp_path: Path, fake: FakeFlashduty, agent_process: Any,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = _logs_dir(tmp_path)
    agent = await _started(agent_process, config_text(fake.url))
    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    await eventually(lambda: _outbox_empty(agent), 5, "outbox drained")

    shown = await run_cli(agent, "status", "-c", "config.yaml")  # the installed command, as an operator runs it
    assert shown.code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"dutytail {__version__}  ok  up ")
    assert lines[0].endswith(f"host {event['labels']['host']}")
    assert "outbox: 0 queued, oldest 0s, 0 dead letters" in shown.stdout
    assert any(line.startswith("output default: sent 1, failed 0, last success ") for line in lines), lines
    assert any(line.startswith("source app (FileSource): 1 files, matcher ") for line in lines), lines
    assert f"  {app}  open  offset {app.stat().st_size}  lag 0 bytes" in lines
    assert "open alerts: 1" in lines
    assert f"  Critical app/db-timeout  count 1  key {event['alert_key']}" in lines
    assert "integration_key" not in shown.stdout

    code, tested = await _cli(agent, capsys, monkeypatch, "send-test")
    assert code == 0, tested
    info, ok = fake.events[1:3]
    assert (info["event_status"], ok["event_status"]) == ("Info", "Ok")
    assert info["alert_key"] == ok["alert_key"] and info["alert_key"].startswith("dutytail-send-test-")
    ids = [r.request_id for r in fake.requests if r.accepted][1:3]
    assert tested.splitlines() == [
        f"output default: Info event OK — HTTP 200 request_id={ids[0]}",
        f"output default: Ok event OK — HTTP 200 request_id={ids[1]}",
    ]

    fake.reject_key()
    code, rejected = await _cli(agent, capsys, monkeypatch, "send-test")
    assert code != 0
    assert "output default: Info event REJECTED — HTTP 400 InvalidParameter: integration_key is not a valid one " \
        "request_id=" in rejected, rejected
    assert "integration_key=" not in rejected


async def test_status_command_shows_tailing_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A rendering bug: an in-process agent's /status document is enough (and quick).
    logs, _ = _logs_dir(tmp_path)
    (logs / "gone.log").symlink_to(tmp_path / "rotated-away" / "gone.log")
    monkeypatch.chdir(tmp_path)
    text = config_text(app_paths='["./logs/*.log"]').replace("${DUTYTAIL_TEST_HEALTH_PORT}", str(free_port()))
    agent = Agent(parse_config(text), stdout=io.StringIO())
    await agent.start()
    try:
        await wait_until(lambda: agent.status()["sources"]["app"]["errors"], 10, "the dangling symlink in /status")
        document = json.loads(json.dumps(agent.status(), default=str))  # what `dutytail status` fetches
    finally:
        await agent.shutdown()
    assert document["sources"]["app"]["errors"][0]["error"].startswith("dangling symlink")
    shown = dutytail_cli.render_status(document)
    assert "dangling symlink" in shown, shown


# --- 9. the integration key never shows --------------------------------------------------------------------

SECRET = "Zq7SECRETkey-do-not-leak-4f2a91"


async def test_integration_key_never_appears_in_any_output(tmp_path: Path, agent_process: Any,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = _logs_dir(tmp_path)
    async with FakeFlashduty(integration_key=SECRET, per_second=None, per_minute=None) as fake:
        agent = await _started(agent_process, config_text(fake.url))
        outputs: dict[str, str] = {}

        fake.fail_next(1, 500)  # first a retryable failure...
        append(app, "ERROR timeout on orders id=1")
        await fake.wait_until(lambda: any(r.status == 500 for r in fake.requests), 10)
        fake.reject_key()  # ...then the key is refused for good: a dead letter

        async def dead_lettered() -> bool:
            return (await fetch(agent, "/healthz")).json()["dead_letters"] == 1

        await eventually(dead_lettered, 10, "the rejected event to be dead-lettered")

        for path in ("/healthz", "/readyz", "/status", "/metrics"):
            outputs[path] = (await fetch(agent, path)).text
        for command in (("status",), ("status", "--json"), ("dead-letters", "list"), ("dead-letters", "list", "--json"),
                        ("check-config",), ("send-test",)):
            _, outputs[" ".join(command)] = await _cli(agent, capsys, monkeypatch, *command)
        outputs["agent stdout+stderr"] = agent.logs()

    assert "integration_key=***" in json.loads(outputs["/status"])["outputs"]["default"]["url"]
    assert "HTTP 400 InvalidParameter" in outputs["dead-letters list"]
    assert "InvalidParameter" in outputs["send-test"] and "500" in outputs["agent stdout+stderr"]
    assert "integration_key=***" in outputs["check-config"]
    leaks = [name for name, text in outputs.items() if SECRET in text]
    assert leaks == [], f"the integration key appears in: {leaks}"


async def test_key_echoed_by_the_server_is_redacted_in_dead_letters_list(tmp_path: Path) -> None:
    async with FakeFlashduty(integration_key=SECRET, per_second=None, per_minute=None) as fake:
        fake.fail_next(1, 400, "InvalidParameter", message=f"integration_key {SECRET} is not a valid one")
        box = Outbox(tmp_path / "state", OutboxConfig())
        await box.open()
        sender = OutputSender(OutputConfig(push_url=fake.url, retry_initial=0.02, retry_max=0.2), box)
        task = asyncio.create_task(sender.run())
        try:
            body = {"title_rule": "t", "event_status": "Critical", "alert_key": "k1"}
            await box.writer.commit(Commit(events=[QueuedEvent(output="default", alert_key="k1", body=body)]))
            await wait_until(lambda: box.stats.dead_letters == 1, 10, "a dead letter")
        finally:
            await cancel_and_wait(task)
            await sender.close()
            await box.close()
        config = tmp_path / "config.yaml"
        config.write_text(f"state_dir: ./state\nflashduty:\n  push_url: {fake.url}\n")
    listed = await run_cli(tmp_path, "dead-letters", "list", "-c", "config.yaml")
    assert listed.code == 0 and "InvalidParameter" in listed.stdout, listed.output
    assert SECRET not in listed.output


# --- 10. push_url_file --------------------------------------------------------------------------------------


def _url_file(tmp_path: Path, url: str, mode: int) -> Path:
    secret = tmp_path / "secret" / "push_url"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text(url + "\n")
    secret.chmod(mode)
    return secret


async def test_push_url_file_delivers_and_world_readable_file_warns(tmp_path: Path, fake: FakeFlashduty,
                                                                    agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    secret = _url_file(tmp_path, fake.url, 0o644)
    flashduty = "  push_url_file: ./secret/push_url\n"
    agent = await _started(agent_process, config_text(flashduty=flashduty))
    warnings = events_named(agent, "secret_file_world_readable")
    assert warnings and warnings[0]["level"] == "warning" and "push_url_file" in warnings[0]["detail"]

    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    assert event["title_rule"] == "v1 timeout on orders"
    assert not (await status(agent))["dry_run"]

    secret.chmod(0o600)  # fixed; the next reload does not warn again
    agent.write_config(config_text(flashduty=flashduty, labels="{env: ops2}"))
    await wait_reloaded(agent, 0, RELOAD_DEADLINE)
    assert len(events_named(agent, "secret_file_world_readable")) == len(warnings)
    assert fake.integration_key not in agent.logs()


async def test_rotated_push_url_file_is_used_after_sighup(tmp_path: Path, fake: FakeFlashduty,
                                                          agent_process: Any) -> None:
    _, app = _logs_dir(tmp_path)
    secret = _url_file(tmp_path, fake.url, 0o600)
    agent = await _started(agent_process, config_text(flashduty="  push_url_file: ./secret/push_url\n"))
    assert agent.proc is not None
    append(app, "ERROR timeout on orders id=1")
    await fake.wait_for_events(1)

    fake.set_key("rotated-key-8d2e6b0a")  # the old key is refused from now on
    secret.write_text(fake.url + "&rotated=1\n")  # the marker makes the switch visible in /status
    agent.proc.send_signal(signal.SIGHUP)  # `systemctl reload dutytail` after rotating the secret

    async def switched() -> bool:
        return str((await status(agent))["outputs"]["default"]["url"]).endswith("integration_key=***&rotated=1")

    await eventually(switched, RELOAD_DEADLINE, "the output to use the rotated URL")
    append(app, "ERROR timeout on orders id=2")
    await fake.wait_for_events(2, timeout=5)


# --- stopping --------------------------------------------------------------------------------------------------


async def test_sender_task_stops_when_cancelled_during_a_wake_up(tmp_path: Path) -> None:
    # Found as a rare hang of this file's dead-letter setup; made deterministic here. In the agent the wake-up
    # is a commit (outbox.on_new_events) or a delivery finishing while Agent._stop_sender() cancels the task.
    box = Outbox(tmp_path / "state", OutboxConfig())
    await box.open()
    sender = OutputSender(OutputConfig(), box, stdout=io.StringIO())  # dry run: no network needed
    task = asyncio.create_task(sender.run(), name="sender")
    try:
        await wait_until(lambda: "OutputSender._sleep_or_wake" in awaiting(task), 5, "the sender to wait for work")
        sender.wake()
        task.cancel()
        await asyncio.wait({task}, timeout=2.0)
        assert task.done(), f"the cancelled sender is still running, now in {awaiting(task)}"
    finally:
        await cancel_and_wait(task)
        await sender.close()
        await box.close()
