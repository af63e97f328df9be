"""Noticing config changes (agent/app/config_watch.py): half-written and truncated files never stop the agent,
atomic rename deploys (Salt, Puppet, Ansible) are applied, SIGHUP applies what the watcher cannot see, and
reading the config file does not make the agent re-read it.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from tests.conftest import AgentProcess, wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    RELOAD_DEADLINE,
    append,
    config_text,
    events_named,
    eventually,
    logs_dir,
    metric,
    metrics,
    reloads,
    started,
    status,
    titles,
    wait_config_watch_armed,
    wait_reloaded,
)

# --- half-written files ---------------------------------------------------------------------------------------


async def test_half_written_file_never_stops_the_agent_and_final_version_applies(tmp_path: Path, fake: FakeFlashduty,
                                                                                 agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))

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
    assert titles(fake) == ["v1 timeout on orders", "v3 timeout on orders"]
    assert (await status(agent))["config_error"] is None
    assert agent.proc is not None and agent.proc.poll() is None


async def test_config_truncated_to_empty_changes_nothing(tmp_path: Path, fake: FakeFlashduty,
                                                         agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))
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


# --- atomic rename deploys ------------------------------------------------------------------------------------


async def test_atomic_rename_deploys_are_applied(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))
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
    assert titles(fake) == ["v2 timeout on orders", "v3 timeout on orders", "v4 timeout on orders"]
    needs_restart = events_named(agent, "reload_ignored_needs_restart")
    assert needs_restart and needs_restart[0]["keys"] == ["state_dir", "outbox"]


# --- SIGHUP ---------------------------------------------------------------------------------------------------


async def test_sighup_reloads_what_the_watcher_cannot_see(tmp_path: Path, fake: FakeFlashduty,
                                                          agent_process: Any) -> None:
    _, app = logs_dir(tmp_path)
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
    assert titles(fake) == ["v2 timeout on orders"] * 2
    assert agent.proc.poll() is None


async def test_reading_the_config_does_not_make_the_agent_reread_it(tmp_path: Path, fake: FakeFlashduty,
                                                                    agent_process: Any) -> None:
    logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))
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
