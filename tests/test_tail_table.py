"""The descriptor budget (agent/tail/table.py): a deleted file is read to its end and then closed,
max_open_files bounds descriptors (also with 2,000 files), and a file closed for the budget and renamed
meanwhile is found again."""

from __future__ import annotations

import os
from pathlib import Path

from agent.tail import TailConfig
from tests.tail_helpers import Harness, append, fd_count, make_lines, report, tail_config, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return tail_config(tmp_path, **{"name": "lim", "rotate_wait": 0.1, **kw})


async def test_deleted_file_read_to_end_then_closed(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    lines = make_lines("D", 0, 5000)
    append(a, lines[:10])
    baseline = fd_count()
    h = Harness(cfg(tmp_path, read_chunk_bytes=4096), queue_size=2)
    h.gate.clear()
    tailer = await h.start()
    await wait_until(lambda: any(f["open"] for f in tailer.status()["files"]), what="file open")
    append(a, lines[10:])
    a.unlink()  # still open by us: the rest is read through the descriptor
    h.gate.set()
    await h.wait_lines(5000)
    await wait_until(lambda: not tailer.status()["files"], what="deleted file closed")
    await wait_until(lambda: bool(h.finished), what="finished batch committed")
    assert not h.committed, "finished=True makes the downstream forget the checkpoint"
    await h.stop()
    h.assert_exactly(lines, "deleted while open, reader lagging")
    await wait_until(lambda: fd_count() <= baseline, what="no leaked descriptors")


async def test_max_open_files_bounds_descriptors(tmp_path: Path) -> None:
    names = [f"f{i:03d}" for i in range(60)]
    for n in names:
        append(tmp_path / f"{n}.log", make_lines(n.upper(), 0, 20))
    baseline = fd_count()
    h = Harness(cfg(tmp_path, max_open_files=8))
    tailer = await h.start()
    await h.wait_lines(60 * 20)
    assert tailer.status()["open_files"] <= 8
    for n in names:  # every file changes again: closed ones are re-opened by path, by identity
        append(tmp_path / f"{n}.log", make_lines(n.upper(), 20, 5))
    await h.wait_lines(60 * 25)
    await h.stop()
    expected = [line for n in names for line in make_lines(n.upper(), 0, 25)]
    h.assert_exactly(expected, "60 files, max_open_files=8")
    # Our descriptors + the inotify fd and its wake-up pipe; a little slack for transient copy searches.
    assert h.max_fds - baseline <= 8 + 6, f"descriptor use {h.max_fds - baseline} above bound"
    await wait_until(lambda: fd_count() <= baseline, what="no leaked descriptors")


async def test_closed_idle_file_rotated_while_closed(tmp_path: Path) -> None:
    """A file closed to respect max_open_files and renamed meanwhile is found again by inode."""
    for n in ("a", "b", "c"):
        append(tmp_path / f"{n}.log", make_lines(n.upper(), 0, 5))
    h = Harness(cfg(tmp_path, max_open_files=1, poll_interval=0.1))
    await h.start()
    await h.wait_lines(15)
    append(tmp_path / "a.log", make_lines("A", 5, 5))
    os.rename(tmp_path / "a.log", tmp_path / "a.log.1")
    append(tmp_path / "a.log", make_lines("A2", 0, 5))
    await h.wait_lines(25)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(
        make_lines("A", 0, 10) + make_lines("A2", 0, 5) + make_lines("B", 0, 5) + make_lines("C", 0, 5),
        "renamed while its descriptor was closed (fd limit)",
    )


async def test_two_thousand_files(tmp_path: Path) -> None:
    for i in range(2000):
        (tmp_path / f"s{i:04d}.log").write_text(f"S{i:04d} 0\nS{i:04d} 1\n")
    baseline = fd_count()
    h = Harness(cfg(tmp_path, max_open_files=200), queue_size=64)
    tailer = await h.start()
    await h.wait_lines(4000, timeout=30)
    for i in range(0, 2000, 7):
        append(tmp_path / f"s{i:04d}.log", [f"S{i:04d} 2"])
    await h.wait_lines(4000 + len(range(0, 2000, 7)), timeout=30)
    status = tailer.status()
    assert status["open_files"] <= 200 and status["files_total"] == 2000
    # /status lists at most 1,000 files per source (the first found, when none lags or fails) and counts the rest
    assert len(status["files"]) == 1000 and status["files_omitted"] == 1000
    assert status["files"][0]["path"].endswith("s0000.log")
    await h.stop()
    assert len(h.lines) == len(set(h.lines)) == 4000 + len(range(0, 2000, 7))
    assert h.max_fds - baseline <= 200 + 6
    report("2,000 files, max_open_files=200", 4000 + len(range(0, 2000, 7)), h.lines)
