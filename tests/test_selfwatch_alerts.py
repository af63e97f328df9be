"""Self alerts end to end: the real agent in a subprocess against the Flashduty-validating fake endpoint, each
condition raised by a real cause (a file the agent's user cannot read, a logrotate run that loses unread
lines, a 400 from the endpoint, a full outbox, a broken config file, journald) and resolved with an Ok when
the cause goes. Short timings in ``self_alerts:`` keep each test to a few seconds; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProcess
from tests.fake_flashduty import FakeFlashduty, validate_event
from tests.ops_helpers import events_named, eventually, run_cli, status, wait_config_watch_armed

LOGROTATE = "/usr/sbin/logrotate"

SELF_ALERTS = (
    "self_alerts:\n"
    "  interval: 0.2s\n"
    "  unreadable_after: 1s\n"
    "  unavailable_after: 1s\n"
    "  config_invalid_after: 1s\n"
    "  quiet: 2s\n"
    "  lag: 1h\n"
)


def config(url: str, *, self_alerts: str = SELF_ALERTS, outbox: str = "", extra: str = "",
           paths: str = '["./logs/*.log"]') -> str:
    """One `app` source (rule `err`: one alert per id) and the self alerts; nothing is str.format-ted."""
    return (
        "state_dir: ./state\n"
        "labels: {env: selftest}\n"
        "flashduty:\n"
        f"  push_url: {url}\n"
        "  retry_initial: 50ms\n"
        "  retry_max: 300ms\n"
        "health:\n"
        "  listen: 127.0.0.1:${DUTYTAIL_TEST_HEALTH_PORT}\n"
        "alerts:\n"
        "  max_events_per_key_per_minute: 1000\n"
        "  max_events_per_minute: 100000\n"
        f"{outbox}"
        f"{self_alerts}"
        "logs:\n"
        "  - name: app\n"
        f"    paths: {paths}\n"
        "    start_at: beginning\n"
        "    poll_interval: 0.2s\n"
        "    rules:\n"
        "      - name: err\n"
        "        match: 'ERROR (?P<id>\\d+)'\n"
        "        identity: [id]\n"
        "        severity: Critical\n"
        '        title: "error {id}"\n'
        '        description: "{line}"\n'
        "        resolve: {after: 1h}\n"
        f"{extra}"
    )


def self_events(fake: FakeFlashduty, condition: str) -> list[dict[str, Any]]:
    return [e for e in fake.events
            if e.get("labels", {}).get("source") == "dutytail" and e["labels"].get("condition") == condition]


async def raised(fake: FakeFlashduty, condition: str, timeout: float = 10.0) -> dict[str, Any]:
    """The first (non-Ok) self alert of ``condition`` the endpoint accepted."""
    await fake.wait_until(lambda: any(e["event_status"] != "Ok" for e in self_events(fake, condition)), timeout)
    event = next(e for e in self_events(fake, condition) if e["event_status"] != "Ok")
    assert validate_event(event) == []
    assert event["event_status"] == "Warning"  # self_alerts.severity's default
    labels = event["labels"]
    assert labels["condition"] == condition and labels["object"] and labels["host"] and labels["env"] == "selftest"
    return event


async def resolved(fake: FakeFlashduty, event: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """The Ok that closes ``event``'s alert."""
    key = event["alert_key"]
    await fake.wait_until(lambda: "Ok" in fake.statuses_for(key), timeout)
    ok = next(e for e in fake.events_for(key) if e["event_status"] == "Ok")
    assert validate_event(ok) == []
    assert ok["labels"]["condition"] == event["labels"]["condition"]
    return ok


async def stopped(agent: AgentProcess) -> int:
    """SIGTERM and wait, off the event loop: the fake endpoint must keep answering the agent's last sends."""
    return await asyncio.to_thread(agent.stop)


async def outbox_depth(agent: AgentProcess) -> int:
    return int((await status(agent))["outbox"]["depth"])


async def open_self_alerts(agent: AgentProcess) -> list[tuple[str, str]]:
    return [(a["condition"], a["object"]) for a in (await status(agent))["self_alerts"]]


def logs_dir(workdir: Path) -> tuple[Path, Path]:
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    app = logs / "app.log"
    app.touch()
    return logs, app


def append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


async def started(agent_process: Any, text: str) -> AgentProcess:
    agent: AgentProcess = agent_process(text)
    agent.start()
    await agent.wait_ready()
    return agent


def rule_ids(fake: FakeFlashduty) -> list[str]:
    return [e["labels"]["id"] for e in fake.events if e["labels"].get("rule") == "err" and e["event_status"] != "Ok"]


# --- a file the agent's user cannot read ---------------------------------------------------------------------


class NobodyAgent(AgentProcess):
    """``dutytail run`` as the unprivileged user ``nobody`` (setpriv), the way a hardened unit runs it."""

    def start(self) -> None:
        self.runs += 1
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 sys.executable, "-m", "agent", "run", "-c", str(self.config_path)],
                cwd=self.workdir, env={**self.env, "DUTYTAIL_TEST_HEALTH_PORT": str(self.health_port)},
                stdout=out, stderr=err,
            )


@pytest.fixture
def nobody_workdir() -> Iterator[Path]:
    """A directory ``nobody`` may write (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the agent as another user")
    workdir = Path(tempfile.mkdtemp(prefix="dutytail-selfwatch-"))
    workdir.chmod(0o777)
    yield workdir
    shutil.rmtree(workdir, ignore_errors=True)


async def test_a_file_the_agent_cannot_read_raises_file_unreadable_and_chmod_resolves_it(
        nobody_workdir: Path, fake: FakeFlashduty) -> None:
    logs, _ = logs_dir(nobody_workdir)
    secure = logs / "secure.log"
    secure.write_text("ERROR 41 written before the agent could read it\n")
    secure.chmod(0o600)  # owned by root
    agent = NobodyAgent(nobody_workdir, config(fake.url))
    try:
        agent.start()
        await agent.wait_ready()
        event = await raised(fake, "file_unreadable")
        assert event["labels"]["object"] == str(secure)
        assert str(secure) in event["title_rule"] or str(secure) in event["description"]
        assert "Permission denied" in event["description"]
        assert ("file_unreadable", str(secure)) in await open_self_alerts(agent)
        assert rule_ids(fake) == []  # the agent really could not read it

        # a restart while it is still unreadable: the open alert stays open (no Ok, no second Warning) ...
        assert await stopped(agent) == 0
        other = logs / "other.log"
        other.write_text("")
        other.chmod(0o600)
        agent.start()
        await agent.wait_ready()
        # ... for longer than unreadable_after: other.log, unreadable since the restart, is raised meanwhile
        await fake.wait_until(lambda: any(e["labels"]["object"] == str(other)
                                          for e in self_events(fake, "file_unreadable")))
        assert fake.statuses_for(event["alert_key"]) == ["Warning"], "the restart closed an alert still holding"

        secure.chmod(0o644)
        other.chmod(0o644)
        ok = await resolved(fake, event)
        assert "readable again" in ok["description"]
        await fake.wait_until(lambda: rule_ids(fake) == ["41"])  # and now it reads what it missed
        await fake.wait_until(lambda: sorted((e["labels"]["object"], e["event_status"])
                                             for e in self_events(fake, "file_unreadable")) == [
            (str(other), "Ok"), (str(other), "Warning"), (str(secure), "Ok"), (str(secure), "Warning")])
        assert await open_self_alerts(agent) == []
        assert await stopped(agent) == 0
    finally:
        agent.cleanup()
    assert fake.violations == []


# --- data lost by a rotation while the agent was down ----------------------------------------------------------


def logrotate(workdir: Path, target: Path, *directives: str) -> None:
    conf = workdir / "logrotate.conf"
    body = "".join(f"    {d}\n" for d in ("missingok", "nomail", *directives))
    conf.write_text(f"{target} {{\n{body}}}\n")
    proc = subprocess.run([LOGROTATE, "-f", "-s", str(workdir / "logrotate.state"), str(conf)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, f"logrotate failed: {proc.stderr}"


@pytest.mark.skipif(not os.access(LOGROTATE, os.X_OK), reason="logrotate is not installed")
async def test_a_rotation_that_loses_unread_lines_raises_data_lost_and_it_resolves_after_quiet(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    append(app, "ERROR 1", "ERROR 2")
    agent = await started(agent_process, config(fake.url))
    await fake.wait_until(lambda: sorted(rule_ids(fake)) == ["1", "2"])
    assert await stopped(agent) == 0
    append(app, "ERROR 3", "ERROR 4")  # written while the agent is down: never read
    logrotate(tmp_path, app, "rotate 0", "create 0644")  # rotate 0: the rotated file is deleted
    assert app.stat().st_size == 0 and not list(app.parent.glob("app.log.*"))

    agent.start()
    await agent.wait_ready()

    async def listed() -> bool:
        return ("data_lost", str(app)) in await open_self_alerts(agent)

    await eventually(listed, 5, "/status to list the data_lost self alert")
    event = await raised(fake, "data_lost")
    assert event["labels"]["object"] == str(app) and str(app) in event["title_rule"]
    lost = events_named(agent, "tail.stream_lost")
    assert [r["path"] for r in lost] == [str(app)]  # the loss is real, not a guess of the self watch

    started_waiting = time.monotonic()
    ok = await resolved(fake, event, timeout=10)
    assert time.monotonic() - started_waiting < 8
    assert "not happened again for 2s" in ok["description"]
    assert fake.statuses_for(event["alert_key"]) == ["Warning", "Ok"]
    assert sorted(rule_ids(fake)) == ["1", "2"]  # 3 and 4 are the lines that were lost
    assert await open_self_alerts(agent) == []
    assert await stopped(agent) == 0
    assert fake.violations == []


# --- dead letters ------------------------------------------------------------------------------------------------


async def test_an_event_the_endpoint_rejects_raises_dead_letters_and_purging_resolves_it(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config(fake.url))
    fake.fail_next(1, 400, "InvalidParameter", message="title_rule contains a word we refuse")
    append(app, "ERROR 7")
    await fake.wait_until(lambda: any(r.status == 400 for r in fake.requests))
    rejected = next(r for r in fake.requests if r.status == 400).json()
    assert rejected["labels"]["rule"] == "err"  # the rule's event was the one refused, not a self alert

    event = await raised(fake, "dead_letters")
    assert event["labels"]["object"] == "outbox"
    assert event["title_rule"].startswith("1 event(s) rejected")
    assert (await status(agent))["outbox"]["dead_letters"] == 1

    listed = await run_cli(agent, "dead-letters", "list", "-c", str(agent.config_path))
    assert listed.code == 0 and "InvalidParameter" in listed.stdout
    purged = await run_cli(agent, "dead-letters", "purge", "--all", "-c", str(agent.config_path))
    assert purged.code == 0 and "purged 1 dead letter(s)" in purged.stdout, purged.output
    ok = await resolved(fake, event)
    assert "no dead letters" in ok["description"]
    assert fake.statuses_for(event["alert_key"]) == ["Warning", "Ok"]
    assert await stopped(agent) == 0
    assert fake.violations == []


# --- a full outbox ------------------------------------------------------------------------------------------------


async def test_a_full_outbox_with_the_endpoint_down_raises_events_dropped_delivered_once_it_is_up(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    await fake.stop()  # a refused connection: every event waits in the outbox
    agent = await started(agent_process, config(fake.url, outbox="outbox:\n  max_bytes: 4KiB\n"))
    append(app, *(f"ERROR {i} " + "x" * 200 for i in range(40)))

    async def dropped() -> int:
        return int((await status(agent))["outbox"]["dropped"].get("outbox_full", 0))

    await eventually(dropped, 10, "the outbox to drop events")

    async def listed() -> bool:
        return ("events_dropped", "outbox_full") in await open_self_alerts(agent)

    await eventually(listed, 10, "/status to list the self alert while the endpoint is down")
    assert fake.events == []

    await fake.start()
    event = await raised(fake, "events_dropped")
    assert event["labels"]["object"] == "outbox_full" and "outbox_full" in event["title_rule"]
    assert "will never be delivered" in event["description"]
    ok = await resolved(fake, event)
    assert "not happened again" in ok["description"]
    assert fake.statuses_for(event["alert_key"]) == ["Warning", "Ok"]
    assert 0 < len(set(rule_ids(fake))) < 40  # the oldest were dropped, the newest delivered
    assert await stopped(agent) == 0
    assert fake.violations == []


# --- a source held back -------------------------------------------------------------------------------------------


async def test_a_source_held_back_by_a_full_outbox_is_behind_after_lag(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    await fake.stop()
    text = config(fake.url, outbox="outbox:\n  max_bytes: 4KiB\n  on_full: block_sources\n",
                  self_alerts=SELF_ALERTS.replace("lag: 1h", "lag: 1s"))
    agent = await started(agent_process, text)
    append(app, *(f"ERROR {i} " + "x" * 200 for i in range(30)))  # more than 4 KiB of events: the outbox is full
    await eventually(lambda: outbox_depth(agent), 10, "the first events in the outbox")
    append(app, "ERROR 30")  # its event waits for room; every batch after it waits behind it

    async def held_back() -> bool:
        files = (await status(agent))["sources"]["app"]["files"]
        return bool(files) and files[0]["offset"] < app.stat().st_size - 20_000

    # a steady log: small writes, each read whole, until the source waits for the writer and reads no more
    deadline = time.monotonic() + 15
    while not await held_back():
        assert time.monotonic() < deadline, "the full outbox never held the source back"
        append(app, *(f"INFO request {i} served " + "y" * 100 for i in range(20)))
        await asyncio.sleep(0.05)

    async def behind() -> bool:
        return ("source_behind", "app") in await open_self_alerts(agent)

    await eventually(behind, 5, "a source_behind self alert for the held-back source")
    await fake.start()
    event = await raised(fake, "source_behind", timeout=20)
    assert event["labels"]["object"] == "app"
    await resolved(fake, event, timeout=20)
    assert await stopped(agent) == 0
    assert fake.violations == []


# --- a config file the agent refuses ------------------------------------------------------------------------------


async def test_a_broken_config_file_raises_config_invalid_and_fixing_it_resolves_it(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    good = config(fake.url)
    agent = await started(agent_process, good)
    await wait_config_watch_armed(agent)
    agent.config_path.write_text(good.replace("    start_at: beginning\n", "    start_at: [sideways\n"))

    event = await raised(fake, "config_invalid")
    assert event["labels"]["object"] == str(agent.config_path)
    assert str(agent.config_path) in event["description"] and "is invalid" in event["title_rule"]
    assert (await status(agent))["config_error"]
    append(app, "ERROR 5")  # meanwhile the previous config keeps working
    await fake.wait_until(lambda: rule_ids(fake) == ["5"])

    agent.config_path.write_text(good)
    ok = await resolved(fake, event)
    assert "valid again" in ok["description"]
    assert fake.statuses_for(event["alert_key"]) == ["Warning", "Ok"]
    assert (await status(agent))["config_error"] is None
    assert await stopped(agent) == 0
    assert fake.violations == []


# --- journald -----------------------------------------------------------------------------------------------------


JOURNAL_SOURCE = (
    "journal:\n"
    "  - name: system\n"
    "    retry_interval: 0.5s\n"
    "{journalctl}"
    "    rules:\n"
    "      - name: oom\n"
    "        contains: 'Out of memory'\n"
    '        title: "OOM on {host}"\n'
)


async def journal_alert_then_removed(fake: FakeFlashduty, agent: AgentProcess) -> None:
    event = await raised(fake, "journal_unavailable")
    assert event["labels"]["object"] == "system" and "journal" in event["title_rule"]
    agent.write_config(config(fake.url))  # the journal source removed
    ok = await resolved(fake, event)
    assert "Resolved" in ok["description"]
    assert fake.statuses_for(event["alert_key"]) == ["Warning", "Ok"]
    assert await open_self_alerts(agent) == []


async def test_journald_unavailable_here_raises_journal_unavailable_and_removing_the_source_resolves_it(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    logs_dir(tmp_path)
    agent = await started(agent_process, config(fake.url, extra=JOURNAL_SOURCE.replace("{journalctl}", "")))
    await wait_config_watch_armed(agent)

    async def available() -> bool | None:
        src = (await status(agent))["sources"]["system"]
        return src["available"] is False or None

    try:
        await eventually(available, 2, "journald to be reported unavailable")
    except AssertionError:
        pytest.skip("journald is readable on this machine (journalctl --follow runs without error, so "
                    "agent/journal.py reports the source available): no real cause for journal_unavailable")
    await journal_alert_then_removed(fake, agent)
    assert await stopped(agent) == 0
    assert fake.violations == []


async def test_journalctl_not_installed_raises_journal_unavailable_and_removing_the_source_resolves_it(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    logs_dir(tmp_path)
    missing = tmp_path / "no-systemd" / "journalctl"  # a host without systemd's journalctl
    text = config(fake.url, extra=JOURNAL_SOURCE.replace("{journalctl}", f"    journalctl: {missing}\n"))
    agent = await started(agent_process, text)
    await wait_config_watch_armed(agent)
    src = (await status(agent))["sources"]["system"]
    assert src["available"] is False and "not found" in src["error"]
    await journal_alert_then_removed(fake, agent)
    assert await stopped(agent) == 0
    assert fake.violations == []


# --- turned off ---------------------------------------------------------------------------------------------------


async def test_turning_self_alerts_off_on_reload_resolves_the_open_ones(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config(fake.url))
    await wait_config_watch_armed(agent)
    fake.fail_next(1, 400, "InvalidParameter", message="refused")
    append(app, "ERROR 9")
    event = await raised(fake, "dead_letters")  # a state that holds until someone acts on it

    agent.write_config(config(fake.url, self_alerts="self_alerts: {enabled: false, interval: 0.2s}\n"))
    ok = await resolved(fake, event)
    assert "turned off" in ok["description"]
    assert await open_self_alerts(agent) == []
    assert (await status(agent))["outbox"]["dead_letters"] == 1  # the cause is still there

    agent.write_config(config(fake.url))  # on again: the condition that still holds is raised again
    await fake.wait_until(lambda: fake.statuses_for(event["alert_key"]) == ["Warning", "Ok", "Warning"])
    assert await stopped(agent) == 0
    assert fake.violations == []
