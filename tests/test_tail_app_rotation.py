"""Applications that rotate their own logs (Python's RotatingFileHandler; log4j and lumberjack behave alike),
and logrotate ``nocreate`` where the application recreates the file: a file lives under the watched name for
milliseconds before it is renamed to a name no glob matches. Each is read whole, once, even while the reader
is held back by a full queue (what an error storm does to it)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.tail import TailConfig
from tests.chaos_helpers import SCALE
from tests.tail_helpers import LOGROTATE, Harness, append, logrotate, make_lines, wait_until

WRITER = r"""
import logging, logging.handlers, sys
path, count, max_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=100)
handler.setFormatter(logging.Formatter("%(message)s"))
log = logging.getLogger("storm")
log.addHandler(handler)
log.setLevel(logging.INFO)
for i in range(count):
    log.info("S%07d ERROR storm %s", i, "x" * 40)
"""


def storm_lines(count: int) -> list[str]:
    """Each line its own tag: generations are read concurrently, so only exactly-once is asserted across them."""
    return [f"S{i:07d} ERROR storm {'x' * 40}" for i in range(count)]


@pytest.mark.soak
@pytest.mark.parametrize("run", range(SCALE))
@pytest.mark.parametrize("max_bytes", [64 * 1024, 1024 * 1024])
@pytest.mark.parametrize("pattern", ["app.log", "app.log*"])
async def test_rotating_file_handler_storm_with_the_reader_held_back(tmp_path: Path, max_bytes: int,
                                                                     pattern: str, run: int) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    rotations_wanted = 20 if max_bytes < 1024 * 1024 else 8  # 8 MiB of storm is enough to show 1 MiB files
    count = rotations_wanted * max_bytes // 60
    config = TailConfig(name="app", paths=[str(logs / pattern)], start_at="beginning", rotate_wait=0.3,
                        poll_interval=0.3)
    h = Harness(config, queue_size=2)
    h.gate.clear()  # the pipeline is busy: the reader blocks on its full queue while the storm rotates
    await h.start()
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", WRITER, str(app), str(count), str(max_bytes)],
                            check=True, timeout=120)
    rotations = len(list(logs.glob("app.log.*")))
    assert rotations >= rotations_wanted * 3 // 4, f"only {rotations} rotations: the scenario did not happen"
    h.gate.set()
    await h.wait_lines(count, timeout=60)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(storm_lines(count), f"RotatingFileHandler {max_bytes // 1024} KiB, {pattern}, reader held back")


async def test_generations_are_found_even_when_the_event_thread_opens_none(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The inotify handler opening births at once is the fast path; when it lags behind a storm (it then opens a
    later generation, or none) the directory ledger still finds every generation never read."""
    from agent.tail.watch import HintBox

    monkeypatch.setattr(HintBox, "_pin", lambda self, path: None)
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    count = 12 * 64 * 1024 // 60
    h = Harness(TailConfig(name="app", paths=[str(app)], start_at="beginning", rotate_wait=0.3, poll_interval=0.3),
                queue_size=2)
    h.gate.clear()
    await h.start()
    await asyncio.to_thread(subprocess.run, [sys.executable, "-c", WRITER, str(app), str(count), str(64 * 1024)],
                            check=True, timeout=120)
    h.gate.set()
    await h.wait_lines(count, timeout=60)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(storm_lines(count), "RotatingFileHandler 64 KiB, no births opened by the event thread")


@pytest.mark.skipif(not shutil.which(LOGROTATE), reason="logrotate is not installed")
async def test_logrotate_nocreate_with_the_application_recreating_the_file(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    parts = [make_lines(f"N{g}", 0, 150) for g in range(4)]
    append(app, parts[0][:10])
    config = TailConfig(name="app", paths=[str(app)], start_at="beginning", rotate_wait=0.3, poll_interval=0.3,
                        read_chunk_bytes=4096)
    h = Harness(config, queue_size=2)
    await h.start()
    await h.wait_lines(10)
    h.gate.clear()
    append(app, parts[0][10:])
    for part in parts[1:]:
        logrotate(tmp_path, app, "nocreate")
        append(app, part)  # the application recreates app.log at its next write
    await wait_until(lambda: len(list(logs.glob("app.log.*"))) == 3, what="three rotations")
    h.gate.set()
    expected = [line for part in parts for line in part]
    await h.wait_lines(len(expected))
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(expected, "logrotate nocreate x3, application recreates, reader held back")
