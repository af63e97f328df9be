"""journald source against real journal files (made with systemd-journal-remote, read with journalctl)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from agent.journal import JournalConfig, JournalSource
from agent.source import Batch, Checkpoint
from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty

REMOTE = "/lib/systemd/systemd-journal-remote"
pytestmark = pytest.mark.skipif(not (Path(REMOTE).exists() and shutil.which("journalctl")),
                                reason="needs journalctl and systemd-journal-remote (installed by .ci/run)")


def write_journal(path: Path, messages: list[tuple[str, str]], start_seq: int = 0) -> None:
    """Append entries (unit, message) to a journal file through the journal export format."""
    export = b""
    for i, (unit, message) in enumerate(messages, start=start_seq):
        usec = 1_700_000_000_000_000 + i * 1000
        export += (f"__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={i + 1}\n"
                   f"_BOOT_ID=0123456789abcdef0123456789abcdef\n_SYSTEMD_UNIT={unit}\nPRIORITY=3\n"
                   f"SYSLOG_IDENTIFIER={unit.split('.')[0]}\nMESSAGE={message}\n\n").encode()
    subprocess.run([REMOTE, f"--output={path}", "-"], input=export, check=True, capture_output=True)


async def collect(source: JournalSource, want: int, timeout: float = 10.0) -> tuple[list[str], Checkpoint | None]:
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    task = asyncio.create_task(source.run(queue))
    lines: list[str] = []
    last: Checkpoint | None = None
    deadline = time.monotonic() + timeout
    try:
        while len(lines) < want and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                batch = await asyncio.wait_for(queue.get(), 0.2)
                lines += batch.lines
                last = batch.checkpoint or last
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return lines, last


async def test_follows_filters_and_resumes_from_cursor_without_gaps_or_repeats(tmp_path: Path) -> None:
    journal = tmp_path / "test.journal"
    write_journal(journal, [("app.service", f"message {i}") for i in range(5)] + [("other.service", "skip me")])
    config = JournalConfig(name="sys", file=str(journal), units=["app.service"], start_at="beginning")
    lines, checkpoint = await collect(JournalSource(config, {}, is_first_start=True), 5)
    assert lines == [f"message {i}" for i in range(5)]
    assert checkpoint is not None and json.loads(checkpoint.state)["cursor"]
    # more entries while "stopped"; resume from the committed cursor
    write_journal(journal, [("app.service", f"message {i}") for i in range(5, 8)], start_seq=10)
    resumed = JournalSource(config, {checkpoint.key: checkpoint}, is_first_start=False)
    more, _ = await collect(resumed, 3)
    assert more == ["message 5", "message 6", "message 7"]


async def test_start_at_end_skips_history(tmp_path: Path) -> None:
    journal = tmp_path / "test.journal"
    write_journal(journal, [("app.service", "old")])
    source = JournalSource(JournalConfig(name="sys", file=str(journal)), {}, is_first_start=True)
    assert "--lines=0" in source.command()
    lines, _ = await collect(source, 1, timeout=1.5)
    assert lines == []


async def test_missing_journalctl_is_reported_not_fatal() -> None:
    source = JournalSource(JournalConfig(name="sys", journalctl="/nonexistent/journalctl", retry_interval=60),
                           {}, is_first_start=True)
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    task = asyncio.create_task(source.run(queue))
    await wait_until(lambda: source.status()["error"] is not None, 5, "error reported")
    assert not task.done()  # keeps running (retrying), does not crash the agent
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert source.status()["available"] is False and "not found" in source.status()["error"]


async def test_journal_rule_delivers_through_the_agent(tmp_path: Path, fake: FakeFlashduty, agent_process) -> None:
    journal = tmp_path / "sys.journal"
    write_journal(journal, [("nginx.service", "worker segfault at 0x0")])
    agent = agent_process(f"""
        state_dir: ./state
        flashduty: {{push_url: "{fake.url}"}}
        health: {{listen: "127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}"}}
        journal:
          - name: system
            file: {journal}
            start_at: beginning
            rules:
              - name: segfault
                match: 'segfault at (?P<addr>\\w+)'
                severity: Critical
                title: "{{unit}} segfault"
    """)
    agent.start()
    await agent.wait_ready()
    events = await fake.wait_for_events(1)
    assert events[0]["title_rule"] == "nginx.service segfault"
    agent.stop()
    agent.start()  # restart: the cursor was committed with the event, nothing is re-sent
    await agent.wait_ready()
    write_journal(journal, [("nginx.service", "segfault at 0x1 again")], start_seq=5)
    await fake.wait_until(lambda: agent.get("/status")[1]["sources"]["system"]["lines_read"] >= 1, 10)
    agent.stop()
    assert len(fake.events) == 1  # same alert still open: the second match is counted, not re-sent
