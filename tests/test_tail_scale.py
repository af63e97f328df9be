"""Files at scale (issue 18): an idle source costs what changed, not what exists, and the safety net still
finds what inotify missed within its bound.

- an idle scan lists no directory and stat()s no file; a new file costs one listing and one open;
- a directory changed again within the tick of its listing is listed again (coarse mtimes);
- a change inotify missed that even the directory's mtime hides is found by the staggered check, within
  ``ceil(files / SWEEP_FILES)`` periods, never all at once;
- a directory that cannot be watched (the watch limit) is polled, reported, and watched again later;
- a hard-linked file that loses one of its names is not taken for rotated;
- status and the self-watch read aggregates, not every file.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from agent.cli import render_status
from agent.selfwatch import AgentSnapshot, SelfAlertsConfig, SelfWatch, SourceSnapshot
from agent.tail import FileSource, InotifyHub, TailConfig, TailCore, TailStats, globs, safety, scan
from agent.tail.watch import HintBox, Hints, inotify
from tests.tail_helpers import Harness, append, make_lines, wait_until


def tree(root: Path, dirs: int, per: int) -> list[Path]:
    files = []
    for d in range(dirs):
        sub = root / f"d{d:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per):
            path = sub / f"f{i:03d}.log"
            path.write_text(f"D{d:02d}F{i:03d} 0\n")
            files.append(path)
    return files


class Watched:
    """A watch that says every directory is watched, and delivers nothing: inotify missing every event."""

    mode = "inotify"
    error = None
    event_driven = True

    def ensure(self, directory: str, renew: bool = False) -> bool:
        return True

    def retain(self, wanted: set[str]) -> None:
        pass

    def watched(self) -> list[str]:
        return []

    def unwatched(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def core_for(root: Path, **kw: Any) -> TailCore:
    config = TailConfig.model_validate({"name": "scale", "paths": [str(root / "*" / "*.log")],
                                        "start_at": "beginning", **kw})
    tailer = TailCore(config, {}, is_first_start=True, stats=TailStats())
    tailer.watch = Watched()
    return tailer


def drain(tailer: TailCore, hints: Hints | None = None) -> list[str]:
    """Cycles until nothing is ready and no file waits for a descriptor (what the source's loop would do)."""
    lines: list[str] = []
    result = tailer.cycle(hints or Hints())
    for _ in range(10_000):
        lines += [line for e in result.emitted for line in e.batch.lines]
        if not result.busy and not tailer.table.waiting:
            return lines
        result = tailer.cycle(Hints())
    raise AssertionError("the tailer never settled")


class StatCount:
    """Counts os.stat() calls on ``*.log`` paths (what scales with the number of files)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files = 0
        real = os.stat

        def counting(path: Any, *a: Any, **k: Any) -> os.stat_result:
            if str(path).endswith(".log"):
                self.files += 1
            return real(path, *a, **k)

        monkeypatch.setattr(os, "stat", counting)


def test_an_idle_scan_lists_nothing_and_a_new_file_costs_one_listing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    files = tree(tmp_path, 20, 100)
    old = time.time_ns() - 3600 * 10**9  # settled directories: their mtimes say everything
    for d in {tmp_path, *(f.parent for f in files)}:
        os.utime(d, ns=(old, old))
    tailer = core_for(tmp_path, max_open_files=4096)  # (a file waiting for a descriptor is stat()ed to open it)
    counter = StatCount(monkeypatch)
    # a first start: identities from the directory entries, checked by each open's fstat(), no stat() of files
    assert len(drain(tailer)) == 2000 and tailer.discovery.last_mode == "full"
    assert counter.files == 0
    tailer.discovery.run(time.monotonic())  # the directories the first safety-net slice asked to list again
    for _ in range(3):
        result = tailer.discovery.run(time.monotonic())
        assert result.mode == "incremental" and result.listed == 0 and not result.came and not result.gone
    assert counter.files == 0, "an idle scan stat()s directories, never files"
    append(tmp_path / "d07" / "new.log", ["NEW 0"])
    result = tailer.discovery.run(time.monotonic())
    assert result.listed == 1 and [p for p, _i, _s in result.came] == [str(tmp_path / "d07" / "new.log")]
    assert counter.files == 1, "one new entry: one stat()"
    assert len(tailer.table.streams) == 2001
    assert drain(tailer) == ["NEW 0"]
    tailer.release()


def test_a_directory_changed_within_the_tick_of_its_listing_is_listed_again(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.log").write_text("")
    scanner = scan.Scanner(globs.PathFilter([str(tmp_path / "*" / "*.log")], []))
    scanner.scan("deep")
    mtime = os.stat(tmp_path / "d").st_mtime_ns
    (tmp_path / "d" / "b.log").write_text("")
    os.utime(tmp_path / "d", ns=(mtime, mtime))  # the second change kept the mtime (same clock tick)
    result = scanner.scan("incremental")
    assert [os.path.basename(p) for p, _i, _s in result.came] == ["b.log"], "listed again: it was not settled"


def test_a_change_even_the_mtime_hides_is_found_by_the_staggered_check(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound: with SWEEP_FILES per period, every directory is listed again and every file checked within
    ceil(files / SWEEP_FILES) periods, whatever inotify and the mtimes say; and never all at once."""
    monkeypatch.setattr(safety, "SWEEP_FILES", 10)
    files = tree(tmp_path, 4, 20)  # 80 files: 8 periods
    old = time.time_ns() - 3600 * 10**9
    for d in {f.parent for f in files}:
        os.utime(d, ns=(old, old))
    tailer = core_for(tmp_path)
    assert len(drain(tailer)) == 80
    for f in files:  # appends with no event at all (the box is not even bound to a watch here)
        append(f, [f"{f.parent.name}{f.stem} 1"])
    hidden = tmp_path / "d02" / "hidden.log"
    hidden.write_text("HIDDEN 0\n")
    os.utime(tmp_path / "d02", ns=(old, old))  # a new entry whose directory mtime says nothing changed
    found: list[str] = []
    for period in range(1, 9):
        tailer._next_rescan = tailer._next_sweep = 0.0  # one rescan_interval period
        found += drain(tailer)
        assert len(found) <= 10 * period + 1, f"period {period}: more than a slice was checked"
    found += drain(tailer)  # the directory marked by the last slice is listed by the scan after it
    want = [f"{f.parent.name}{f.stem} 1" for f in files]
    assert sorted(found) == sorted([*want, "HIDDEN 0"])
    tailer.release()


async def test_a_directory_that_cannot_be_watched_is_polled_and_reported(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "watched").mkdir()
    (tmp_path / "limited").mkdir()
    real_watch = InotifyHub.watch_dir
    limit = {"on": True}

    def watch_dir(self: InotifyHub, path: str, box: HintBox, renew: bool = False) -> None:
        if limit["on"] and path.endswith("limited"):
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        real_watch(self, path, box, renew)

    monkeypatch.setattr(InotifyHub, "watch_dir", watch_dir)
    monkeypatch.setattr(inotify, "RETRY_UNWATCHED", 0.3)
    h = Harness(TailConfig(name="lim", paths=[str(tmp_path / "*" / "*.log")], start_at="beginning",
                           rescan_interval=60, poll_interval=0.2, rotate_wait=0.2))
    with structlog.testing.capture_logs() as logs:
        tailer = await h.start()
        await wait_until(lambda: tailer.status()["unwatched_dirs"] == 1, what="the limited directory reported")
    (fallback,) = [e for e in logs if e["event"] == "tail.inotify_fallback"]
    assert fallback["directory"] == str(tmp_path / "limited") and "watch limit" in fallback["reason"]
    status = tailer.status()
    assert status["watch_mode"] == "inotify" and "watch limit" in (status["watch_error"] or "")
    assert status["unwatched"] == [str(tmp_path / "limited")]
    assert str(tmp_path / "watched") in status["watched_dirs"]
    append(tmp_path / "limited" / "p.log", make_lines("P", 0, 3))  # no event: found by polling
    append(tmp_path / "watched" / "w.log", make_lines("W", 0, 3))
    await h.wait_lines(6, timeout=5)
    append(tmp_path / "limited" / "p.log", make_lines("P", 3, 3))
    await h.wait_lines(9, timeout=5)
    limit["on"] = False  # the limit was raised: watched again, the error clears
    await wait_until(lambda: tailer.status()["unwatched_dirs"] == 0, timeout=5, what="watched again")
    assert tailer.status()["watch_error"] is None
    append(tmp_path / "limited" / "p.log", make_lines("P", 6, 3))
    await h.wait_lines(12, timeout=5)
    await h.stop()
    h.assert_exactly(make_lines("P", 0, 9) + make_lines("W", 0, 3), "a directory over the inotify watch limit")


async def test_a_hard_linked_file_losing_one_name_is_not_rotated(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = tmp_path / "a" / "x.log"
    append(first, make_lines("X", 0, 3))
    os.link(first, tmp_path / "b" / "x.log")
    h = Harness(TailConfig(name="links", paths=[str(tmp_path / "*" / "*.log")], start_at="beginning",
                           rescan_interval=0.2, poll_interval=0.2, rotate_wait=0.2))
    tailer = await h.start()
    await h.wait_lines(3)
    first.unlink()  # one name left: the same file, still matched
    await wait_until(lambda: tailer._core.discovery.last_mode == "full", timeout=5, what="a full scan")
    append(tmp_path / "b" / "x.log", make_lines("X", 3, 3))
    await h.wait_lines(6)
    await asyncio.sleep(0.5)  # rotate_wait and a few rescans: a drained stream would end here
    status = tailer.status()
    assert [f["state"] for f in status["files"]] == ["open"], status["files"]
    append(tmp_path / "b" / "x.log", make_lines("X", 6, 3))
    await h.wait_lines(9)
    await h.stop()
    h.assert_exactly(make_lines("X", 0, 9), "a hard link of a followed file removed")


def test_status_is_capped_and_keeps_what_is_wrong(tmp_path: Path) -> None:
    for i in range(1500):
        (tmp_path / f"f{i:04d}.log").write_text("x\n")
    (tmp_path / "partial.log").write_text("complete\nno newline yet")
    source = FileSource(TailConfig(name="st", paths=[str(tmp_path / "*.log")], start_at="beginning"), {},
                        is_first_start=True)
    tailer = source._core
    drain(tailer)
    status = source.status()
    assert status["files_total"] == 1501 and len(status["files"]) == 1000 and status["files_omitted"] == 501
    (lagging,) = status["behind"]  # the only stream with bytes on disk not handed on
    assert lagging["path"].endswith("partial.log") and lagging["size"] - lagging["offset"] == len("no newline yet")
    assert status["files"][0]["path"].endswith("partial.log"), "what lags is listed first"
    assert status["lag_bytes"] == len("no newline yet")
    assert status["files_tailed"] == status["open_files"] <= 1024
    summary = source.summary()
    assert summary["files"] == [] and summary["files_total"] == 1501 and len(summary["behind"]) == 1
    shown = render_status({"sources": {"st": status}})  # `dutytail status` counts every file, not the listed ones
    assert "source st (" in shown and ": 1501 files," in shown and "(501 not listed)" in shown, shown
    tailer.release()


def test_the_self_watch_reads_the_streams_behind_not_every_file() -> None:
    watch = SelfWatch(SelfAlertsConfig(lag=60))
    behind = [{"key": "k", "path": "/var/log/a.log", "offset": 10, "size": 5000}]

    def look(now: float, streams: list[dict[str, Any]]) -> set[str]:
        status = {"files": [], "errors": [], "behind": streams, "stream_errors": []}
        snap = AgentSnapshot("h", [SourceSnapshot("app", False, status)], 0, {}, "", "/etc/dutytail.yaml")
        found, _holding = watch.look(snap, now)
        return {o.condition for o in found}

    assert look(0, behind) == set()
    assert look(61, [{**behind[0], "offset": 20}]) == {"source_behind"}, "still short of what was there at 0"
    assert look(62, []) == set()


def test_a_cycle_reads_a_backlog_four_chunks_at_a_time_round_robin(tmp_path: Path) -> None:
    """Each cycle is a round trip through the event loop: a backlog is read four chunks per cycle, one chunk
    per file per turn (a big file does not starve a small one), and every chunk is its own batch."""
    line = "x" * 99 + "\n"
    (tmp_path / "big.log").write_text(line * (10 * 4096 // 100 * 10))  # ~10 chunks of 4 KiB
    (tmp_path / "small.log").write_text("small one\nsmall two\n")
    tailer = TailCore(TailConfig(name="rr", paths=[str(tmp_path / "*.log")], start_at="beginning",
                                 read_chunk_bytes=4096), {}, is_first_start=True, stats=TailStats())
    tailer.watch = Watched()
    first = tailer.cycle(Hints())
    by_file = [Path(e.batch.path).name for e in first.emitted if e.batch.lines]
    # the budget is four chunks' bytes: big, small (20 bytes), then big again until the budget is spent
    assert sorted(by_file[:2]) == ["big.log", "small.log"] and by_file[2:] == ["big.log"] * 3, by_file
    assert first.busy, "the rest of the backlog is still ready"
    # a batch is one chunk (and the partial line the previous read held back)
    assert all(len("\n".join(e.batch.lines)) <= 4096 + len(line) for e in first.emitted)
    lines = [x for e in first.emitted for x in e.batch.lines] + drain(tailer)
    assert lines.count("small one") == 1 and len(lines) == 2 + 10 * 4096 // 100 * 10
    tailer.release()
