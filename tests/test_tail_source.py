"""The file source end to end (agent/tail/source.py): existing and appended lines, a partial last line across a
restart, start_at, exclude_paths and files appearing later, empty and short files, files with identical first
bytes, and the shape of its status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from agent.lines import LineChunk
from agent.tail import TailConfig
from tests.tail_helpers import Harness, append, make_lines, tail_config, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return tail_config(tmp_path, **{"name": "t", "rotate_wait": 0.2, **kw})


def lim_cfg(tmp_path: Path, **kw: object) -> TailConfig:  # the defaults test_status_shape had in test_tail_limits.py
    return tail_config(tmp_path, **{"name": "lim", "rotate_wait": 0.1, **kw})


async def test_reads_existing_and_appended_lines(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    want = make_lines("A", 0, 500)
    append(a, want[:300])
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(300)
    append(a, want[300:])
    await h.wait_lines(500)
    await h.stop()
    h.assert_exactly(want, "append while running")
    assert h.stats.lines_read == 500
    # the fast path: lines handed on as raw bytes, decoded only where a rule looks
    assert all(isinstance(b.lines, LineChunk) for b in h.batches if b.lines)


async def test_partial_last_line_is_held_across_restart(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, make_lines("A", 0, 3))
    with open(a, "ab") as fh:
        fh.write(b"A 0000003 half")
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(3)
    await h.stop(crash=True)
    state = json.loads(next(iter(h.committed.values())).state)
    assert state["position"] == a.stat().st_size - len(b"A 0000003 half"), "checkpoint must stay before the partial"
    with open(a, "ab") as fh:
        fh.write(b" done\n")
    await h.start()
    await h.wait_lines(4)
    await h.stop()
    assert h.lines[-1] == "A 0000003 half done"
    assert len(h.lines) == 4


async def test_start_at_end_first_start_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    append(a, make_lines("OLD", 0, 50))
    with open(a, "ab") as fh:
        fh.write(b"OLD partial-at-start")  # an unfinished line is completed later: read whole, not cut
    h = Harness(cfg(tmp_path, start_at="end"))
    await h.start()
    await wait_until(lambda: bool(h.committed), what="initial checkpoint for the skipped content")
    with open(a, "ab") as fh:
        fh.write(b" completed\n")
    append(a, make_lines("A", 0, 10))
    append(b, make_lines("B", 0, 10))  # appears later: read from its beginning
    await h.wait_lines(21)
    await h.stop()
    assert "OLD partial-at-start completed" in h.lines  # the unfinished line was not cut at start
    # Later start (not first): a file without a checkpoint is read from the beginning.
    c = tmp_path / "c.log"
    append(c, make_lines("C", 0, 10))
    append(a, make_lines("A", 10, 5))
    await h.start()
    await h.wait_lines(36)
    await h.stop()
    h.assert_exactly(
        ["OLD partial-at-start completed", *make_lines("A", 0, 15), *make_lines("B", 0, 10), *make_lines("C", 0, 10)],
        "start_at end (first start) / later starts",
    )


async def test_start_at_beginning(tmp_path: Path) -> None:
    append(tmp_path / "a.log", make_lines("A", 0, 20))
    h = Harness(cfg(tmp_path, start_at="beginning"))
    await h.start()
    await h.wait_lines(20)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 20), "start_at beginning")


async def test_exclude_paths_and_new_files_picked_up(tmp_path: Path) -> None:
    sub = tmp_path / "d"
    h = Harness(
        cfg(
            tmp_path,
            paths=[str(sub / "*")],
            exclude_paths=["*.gz", str(sub / "skip-*")],
            rescan_interval=30,
        )
    )
    await h.start()
    await asyncio.sleep(0.1)
    sub.mkdir()  # the directory itself appears after start
    append(sub / "a.log", make_lines("A", 0, 5))
    append(sub / "a.log.1.gz", ["GZ should not be read"])
    append(sub / "skip-me.log", ["SKIP should not be read"])
    await h.wait_lines(5, timeout=5)
    append(sub / "b.txt", make_lines("B", 0, 5))
    await h.wait_lines(10, timeout=5)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 5) + make_lines("B", 0, 5), "exclude_paths / files appearing later")


async def test_empty_and_short_files(tmp_path: Path) -> None:
    e = tmp_path / "e.log"
    e.touch()
    s = tmp_path / "s.log"
    append(s, ["S1"])  # 3 bytes: far shorter than the fingerprint
    h = Harness(cfg(tmp_path, fingerprint_bytes=64))
    await h.start()
    await h.wait_lines(1)
    append(e, ["E1"])
    append(s, ["S2"])
    await h.wait_lines(3)
    await h.stop(crash=True)
    # The fingerprint grew with the file; a restart continues (does not re-read) ...
    append(s, ["S3"])
    await h.start()
    await h.wait_lines(4)
    await h.stop()
    assert sorted(h.lines) == ["E1", "S1", "S2", "S3"]
    # ... and a short file rewritten while stopped (same size!) is recognised as new content.
    s.write_bytes(b"T1\nT2\nT3\n")
    await h.start()
    await h.wait_lines(7)
    await h.stop()
    assert sorted(h.lines) == ["E1", "S1", "S2", "S3", "T1", "T2", "T3"]


async def test_identical_first_bytes_are_different_streams(tmp_path: Path) -> None:
    header = "# same header for every file ".ljust(400, "=")
    for name in ("x", "y"):
        append(tmp_path / f"{name}.log", [header, *make_lines(name.upper(), 0, 20)])
    h = Harness(cfg(tmp_path, fingerprint_bytes=256))
    await h.start()
    await h.wait_lines(42)
    await h.stop(crash=True)
    assert len(h.committed) == 2, "two files with the same first bytes keep two checkpoints"
    for name in ("x", "y"):
        append(tmp_path / f"{name}.log", make_lines(name.upper(), 20, 5))
    await h.start()
    await h.wait_lines(52)
    await h.stop()
    h.lines = [line for line in h.lines if line != header]
    h.assert_exactly(make_lines("X", 0, 25) + make_lines("Y", 0, 25), "identical first bytes, restart")


# --- status ---------------------------------------------------------------------------------------------------


async def test_status_shape(tmp_path: Path) -> None:
    append(tmp_path / "a.log", ["x"])
    h = Harness(lim_cfg(tmp_path))
    tailer = await h.start()
    await h.wait_lines(1)
    st = tailer.status()
    f = st["files"][0]
    assert {"path", "key", "offset", "size", "lag_bytes", "open", "last_error"} <= set(f)
    assert f["lag_bytes"] == 0 and f["open"] is True and st["watch_mode"] in ("inotify", "polling")
    await h.stop()
