"""Every logrotate mode, stopped and live, run several times: exactly the lines written, once each.

The matrix of the second pass at "never lose a line": create, copytruncate, copy, nocreate (the application
recreates the file), olddir (found through ``rotated_paths``), renamecopy, dateext, extension, and compress
with and without delaycompress. Live runs rotate four times while a slow consumer keeps the reader behind;
stopped runs rotate while the tailer is down. Each case runs ``DUTYTAIL_SOAK_SCALE`` times (1 in the normal
suite, 10 in the soak run): a flaky case is a losing case. Rows go to ``$DUTYTAIL_TAIL_REPORT`` when set
(written / delivered / duplicated, for the closing note's table).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from agent.tail import TailConfig
from tests.chaos_helpers import SCALE
from tests.tail_helpers import LOGROTATE, Harness, append, logrotate, make_lines

pytestmark = [pytest.mark.soak, pytest.mark.skipif(not shutil.which(LOGROTATE), reason="logrotate is not installed")]

MODES: dict[str, tuple[str, ...]] = {
    "create": ("create",),
    "copytruncate": ("copytruncate",),
    "copy": ("copy",),
    "nocreate": ("nocreate",),
    "olddir": ("create", "olddir {old}"),
    "olddir+compress": ("create", "olddir {old}", "compress"),
    "renamecopy": ("create", "renamecopy"),
    "dateext": ("create", "dateext", "dateformat -%s"),
    "extension": ("create", "extension .log"),
    "compress": ("create", "compress"),
    "compress+delaycompress": ("create", "compress", "delaycompress"),
    "copytruncate+compress": ("copytruncate", "compress"),
}


def options(mode: str, old: Path) -> list[str]:
    return [o.format(old=old) for o in MODES[mode]]


def config(logs: Path, old: Path) -> TailConfig:
    return TailConfig(name="matrix", paths=[str(logs / "app.log")], rotated_paths=[str(old / "app*")],
                      start_at="beginning", rotate_wait=0.3, poll_interval=0.2, read_chunk_bytes=4096)


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    logs, old = tmp_path / "logs", tmp_path / "old"
    logs.mkdir()
    old.mkdir()
    return logs, old


async def rotate(tmp_path: Path, app: Path, mode: str, old: Path) -> None:
    if mode.startswith("dateext"):
        await asyncio.sleep(1.05)  # dateformat -%s: one rotated name per second
    await asyncio.to_thread(logrotate, tmp_path, app, *options(mode, old))


@pytest.mark.parametrize("run", range(SCALE))
@pytest.mark.parametrize("mode", sorted(MODES))
async def test_live(tmp_path: Path, mode: str, run: int) -> None:
    logs, old = dirs(tmp_path)
    app = logs / "app.log"
    generations = [make_lines(f"G{g}", 0, 150) for g in range(5)]
    append(app, generations[0][:10])
    h = Harness(config(logs, old), queue_size=2)
    h.slow = 0.002  # the pipeline is slower than the writer: the reader is behind at every rotation
    await h.start()
    await h.wait_lines(10)
    append(app, generations[0][10:])
    for generation in generations[1:]:
        await rotate(tmp_path, app, mode, old)
        append(app, generation)  # nocreate: this write recreates the file, as the application would
    expected = [line for generation in generations for line in generation]
    await h.wait_lines(len(expected), timeout=30)
    await h.wait_idle(timeout=15)
    await h.stop()
    h.assert_exactly(expected, f"live: logrotate {mode}")


@pytest.mark.parametrize("run", range(SCALE))
@pytest.mark.parametrize("mode", sorted(MODES))
async def test_stopped(tmp_path: Path, mode: str, run: int) -> None:
    logs, old = dirs(tmp_path)
    app = logs / "app.log"
    read, unread, after = make_lines("A", 0, 100), make_lines("A", 100, 50), make_lines("B", 0, 50)
    append(app, read)
    h = Harness(config(logs, old))
    await h.start()
    await h.wait_lines(len(read))
    await h.stop()
    append(app, unread)  # written while the agent is down, then rotated away before it comes back
    await rotate(tmp_path, app, mode, old)
    append(app, after)
    await h.start()
    await h.wait_lines(len(read) + len(unread) + len(after), timeout=20)
    await h.wait_idle(timeout=15)
    await h.stop()
    h.assert_exactly(read + unread + after, f"stopped: logrotate {mode}")
