"""The state directory as a hostile operator treats it: a second agent on it, deleted while in use, a store
that cannot be opened. None may lose or repeat a queued event, and each says what happened."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chaos_helpers import fill, small_tmpfs
from tests.conftest import AgentProcess, free_port, wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import append, eventually, fetch, status

CONFIG = """
state_dir: {state}
flashduty:
  push_url: {url}
  retry_initial: 50ms
  retry_max: 200ms
health:
  listen: 127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}
logs:
  - name: app
    paths: ["{log}"]
    start_at: beginning
    rules:
      - name: err
        match: 'ERROR (?P<n>\\d+)'
        identity: [n]
        resolve: {{after: 1h}}
"""


def setup(tmp_path: Path, url: str, state: Path | None = None) -> tuple[str, Path]:
    log = tmp_path / "app.log"
    log.touch()
    return CONFIG.format(state=state or tmp_path / "state", url=url, log=log), log


async def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path: Path, fake: FakeFlashduty,
                                                             agent_process: Any) -> None:
    config, log = setup(tmp_path, fake.url)
    first = agent_process(config)
    first.start()
    await first.wait_ready()
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = AgentProcess(second_dir, config)
    second.start()
    try:
        assert second.proc is not None
        assert second.proc.wait(30) == 1
        assert f"is in use by another dutytail (pid {first.proc.pid})" in second.logs()
        append(log, "ERROR 1")
        await fake.wait_for_events(1)
        assert first.stop() == 0
        third = AgentProcess(second_dir, config)  # the lock went with the first agent
        third.start()
        await third.wait_ready()
        assert third.stop() == 0
        assert len(fake.events) == 1, "the event went out more than once"
    finally:
        second.cleanup()


async def test_a_deleted_state_dir_is_noticed_and_recreated_without_losing_what_was_queued(
        tmp_path: Path, agent_process: Any) -> None:
    fake = FakeFlashduty(per_second=None, per_minute=None)
    await fake.start()
    url = fake.url
    await fake.stop()  # the endpoint is down: events wait in the store
    state = tmp_path / "state"
    config, log = setup(tmp_path, url)
    agent = agent_process(config)
    agent.start()
    await agent.wait_ready()
    append(log, "ERROR 1", "ERROR 2")
    await wait_until(lambda: (state / "outbox.db").exists(), 5, "the store")

    async def depth() -> int:
        return int((await status(agent))["outbox"]["depth"])

    async def depth_is(n: int) -> bool:
        return await depth() == n

    await eventually(lambda: depth_is(2), 10, "two events queued")
    shutil.rmtree(state)

    async def says_recreated() -> Any:
        ready = await fetch(agent, "/readyz")
        return ready if ready.status == 503 and "deleted or replaced" in ready.text else None

    ready = await eventually(says_recreated, 15, "/readyz to say the store was recreated")  # looked at every 5 s
    assert "nothing queued was lost" in ready.text, ready.text
    assert (state / "outbox.db").exists(), "the store was not recreated"
    assert await depth() == 2
    append(log, "ERROR 3")  # queued into the recreated store
    await eventually(lambda: depth_is(3), 10, "the third event queued")
    agent.kill9()
    await fake.start()
    agent.start()
    await agent.wait_ready()
    events = await fake.wait_for_events(3, timeout=15)
    assert sorted(e["labels"]["n"] for e in events) == ["1", "2", "3"]
    assert agent.stop() == 0
    assert len(fake.events) == 3
    await fake.stop()


def _no_dac_override() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a file mode cannot deny access here")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


def _run(config_path: Path, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DUTYTAIL_TEST_HEALTH_PORT": str(free_port())}
    return subprocess.run([*prefix, sys.executable, "-m", "agent", "run", "-c", str(config_path)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=config_path.parent)


def _queued(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


async def _store_with_a_queued_event(tmp_path: Path, agent_process: Any, state: Path) -> tuple[Path, Path]:
    config, log = setup(tmp_path, "http://127.0.0.1:9/event/push/alert/standard?integration_key=down", state)
    agent = agent_process(config)
    agent.start()
    await agent.wait_ready()
    append(log, "ERROR 1")
    await wait_until(lambda: (state / "outbox.db").exists() and _queued(state / "outbox.db") == 1, 10, "queued")
    assert agent.stop() == 0
    return agent.config_path, state / "outbox.db"


async def test_an_unreadable_store_is_an_error_that_keeps_it(tmp_path: Path, agent_process: Any) -> None:
    prefix = _no_dac_override()
    config_path, db = await _store_with_a_queued_event(tmp_path, agent_process, tmp_path / "state")
    os.chmod(db, 0o000)
    try:
        result = _run(config_path, prefix)
    finally:
        os.chmod(db, 0o600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert f"{db} is not readable and writable" in result.stderr
    assert not list(db.parent.glob("outbox.db.corrupt-*")), "an intact store was moved aside"
    assert _queued(db) == 1


async def test_a_full_disk_at_start_never_moves_the_store_aside(tmp_path: Path, agent_process: Any) -> None:
    """A full disk at start used to be taken for corruption: the intact store was moved aside and every file
    read again from the beginning (or, with `start_at: end`, what was queued silently dropped)."""
    with small_tmpfs(tmp_path / "small", "2m") as small:
        state = small / "state"
        config_path, db = await _store_with_a_queued_event(tmp_path, agent_process, state)
        agent = agent_process(config_path.read_text())
        filler = fill(small)
        try:
            agent.start()
            assert agent.proc is not None

            def settled() -> bool:
                if agent.proc is not None and agent.proc.poll() is not None:
                    return True
                try:
                    return agent.get("/healthz")[0] == 200
                except OSError:
                    return False

            await wait_until(settled, 30, "the agent to refuse the store or to run")
            if agent.proc.poll() is None:
                assert agent.stop() == 0
            else:
                assert agent.proc.returncode == 1 and "cannot open the outbox" in agent.logs()
        finally:
            filler.unlink()
        assert not list(state.glob("outbox.db.corrupt-*")), "an intact store was moved aside"
        assert _queued(db) == 1
