"""The watcher backends: one inotify hub per agent shared by its sources, overflows, and the hint hand-over;
for a single source: new files found at once with inotify, the polling fallback (forced, or when inotify fails),
a watched directory removed and recreated, and periodic rescans as the safety net when inotify events are lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.source import Batch
from agent.tail import FileSource, InotifyHub, TailConfig
from agent.tail.globs import PathFilter
from agent.tail.watch import HintBox
from tests.tail_helpers import Harness, append, make_lines, tail_config, wait_until


def hub_cfg(directory: Path, name: str, **kw: object) -> TailConfig:
    # a minute between safety-net rescans: within these tests only inotify (or an overflow rescan) finds lines
    base: dict[str, object] = {"name": name, "paths": [str(directory / "*.log")], "start_at": "beginning",
                               "rescan_interval": 60, "poll_interval": 60}
    base.update(kw)
    return TailConfig.model_validate(base)


def cfg(tmp_path: Path, **kw: object) -> TailConfig:  # the single-source tests' defaults (from test_tail.py)
    return tail_config(tmp_path, **{"name": "t", "rotate_wait": 0.2, **kw})


class Running:
    """A FileSource on a shared hub, with a consumer collecting its lines."""

    def __init__(self, config: TailConfig, hub: InotifyHub) -> None:
        self.source = FileSource(config, {}, is_first_start=True, hub=hub)
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=16)
        self.lines: list[str] = []
        self._tasks = [asyncio.create_task(self.source.run(self.queue)), asyncio.create_task(self._consume())]

    async def _consume(self) -> None:
        while True:
            batch = await self.queue.get()
            self.lines.extend(batch.lines)
            self.queue.task_done()

    async def stop(self) -> None:
        self._tasks[0].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[0]
        await self.source.close(None)
        self._tasks[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._tasks[1]


def watchdog_reports_overflow() -> None:
    """What watchdog 7 does when the kernel's inotify queue overflows: it only logs (one descriptor serves every
    watch of the process, so events of all of them were lost)."""
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; filesystem events were lost")


async def test_one_overflow_is_counted_once_and_every_source_rescans(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    hub = InotifyHub()
    dirs = [tmp_path / n for n in ("a", "b", "c")]
    for d in dirs:
        d.mkdir()
        append(d / "x.log", make_lines(d.name.upper(), 0, 2))
    running = [Running(hub_cfg(d, d.name), hub) for d in dirs]
    try:
        for r, d in zip(running, dirs, strict=True):
            await wait_until(lambda r=r: len(r.lines) == 2, what=f"first lines of {d.name}")
            await wait_until(lambda r=r: r.source.status()["watch_mode"] == "inotify", what="inotify mode")
        # new watches arm asynchronously, so sources rescan often for a moment after adding one: let it pass
        settled = max(r.source._core.watch.settle_until for r in running) + 0.3  # type: ignore[attr-defined]
        await wait_until(lambda: time.monotonic() > settled, timeout=5, what="watches armed")
        # the kernel drops events: nothing reaches the sources ...
        monkeypatch.setattr(HintBox, "on_event", lambda self, event: None)
        for d in dirs:
            append(d / "x.log", make_lines(d.name.upper(), 2, 3))
        await asyncio.sleep(0.3)
        assert all(len(r.lines) == 2 for r in running), "an event got through: the test proves nothing"
        # ... and watchdog logs the overflow once
        watchdog_reports_overflow()
        for r, d in zip(running, dirs, strict=True):
            await wait_until(lambda r=r: len(r.lines) == 5, timeout=5, what=f"rescan of {d.name} after overflow")
            assert r.lines == make_lines(d.name.upper(), 0, 5)
            assert r.source.stats.overflow_rescans == 1
            assert "overflowed" in (r.source.status()["watch_error"] or "")
        assert hub.overflows == 1  # one overflow, one count, however many sources
    finally:
        for r in running:
            await r.stop()
        hub.stop()


async def test_a_directory_two_sources_watch_stays_watched_when_one_stops(tmp_path: Path) -> None:
    hub = InotifyHub()
    first = Running(hub_cfg(tmp_path, "first"), hub)
    second = Running(hub_cfg(tmp_path, "second"), hub)
    try:
        append(tmp_path / "x.log", make_lines("X", 0, 1))
        await wait_until(lambda: len(first.lines) == 1 and len(second.lines) == 1, what="both read the file")
        await first.stop()
        append(tmp_path / "x.log", make_lines("X", 1, 1))
        # no rescan for a minute: only the shared watch, still armed for the second source, can deliver this
        await wait_until(lambda: len(second.lines) == 2, timeout=5, what="the event after the first source stopped")
    finally:
        await second.stop()
        hub.stop()


def test_hint_box_filters_by_followed_paths_and_wakes_once(tmp_path: Path) -> None:
    box = HintBox(PathFilter([str(tmp_path / "*.log")], ["skip.log"]))
    wakes: list[int] = []
    box.bind(lambda: wakes.append(1))
    followed = str(tmp_path / "real" / "target.log")  # a symlink target: followed, though no glob matches it

    def event(kind: str, path: Path | str, directory: bool = False, dest: str = "") -> SimpleNamespace:
        return SimpleNamespace(event_type=kind, src_path=str(path), is_directory=directory, dest_path=dest)

    box.on_event(event("modified", followed))
    assert not box.take(), "not published as followed yet: neither a read nor a rescan"
    box.publish_followed(frozenset({followed}))
    box.on_event(event("modified", followed))
    box.on_event(event("modified", tmp_path / "other.txt"))  # neither followed nor matching: ignored
    box.on_event(event("modified", tmp_path / "skip.log"))  # excluded
    box.on_event(event("closed", followed))
    assert wakes == [1], "one wake-up per batch of hints"
    hints = box.take()
    assert hints.changed == {followed} and not hints.rescan and not hints.overflowed
    box.on_event(event("modified", tmp_path / "new.log"))  # matches, not followed (e.g. could not be opened)
    box.on_event(event("created", tmp_path / "sub", directory=True))
    assert wakes == [1, 1]
    hints = box.take()
    # a rescan, and the path too: the worker reads it if it follows it by now (the box's index may be a moment old)
    assert hints.rescan and hints.changed == {str(tmp_path / "new.log")}
    box.on_event(event("moved", tmp_path / "a.tmp", dest=str(tmp_path / "a.log")))  # an atomic rename into place
    assert box.take().rescan
    box.overflowed()
    assert box.take().overflowed
    assert not box.take()


# --- watching with a single source ----------------------------------------------------------------------------


async def test_new_file_picked_up_quickly_with_inotify(tmp_path: Path) -> None:
    h = Harness(cfg(tmp_path, rescan_interval=60, poll_interval=30))
    tailer = await h.start()
    await wait_until(lambda: tailer.status()["watch_mode"] == "inotify", what="inotify watch")
    append(tmp_path / "n.log", make_lines("N", 0, 3))
    await h.wait_lines(3, timeout=2)  # far below the 30 s/60 s timers: the inotify hint did it
    append(tmp_path / "n.log", make_lines("N", 3, 3))
    await h.wait_lines(6, timeout=2)
    await h.stop()
    h.assert_exactly(make_lines("N", 0, 6))


async def test_polling_fallback_delivers(tmp_path: Path) -> None:
    h = Harness(cfg(tmp_path, poll_interval=0.1), force_polling=True)
    tailer = await h.start()
    append(tmp_path / "p.log", make_lines("P", 0, 10))
    await h.wait_lines(10, timeout=5)
    append(tmp_path / "p.log", make_lines("P", 10, 10))
    await h.wait_lines(20, timeout=5)
    assert tailer.status()["watch_mode"] == "polling"
    await h.stop()
    h.assert_exactly(make_lines("P", 0, 20), "inotify disabled: polling fallback")


async def test_observer_failure_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(InotifyHub, "watch_dir", boom)  # every directory: the watch limit
    h = Harness(cfg(tmp_path, poll_interval=0.1))
    tailer = await h.start()
    append(tmp_path / "p.log", make_lines("P", 0, 10))
    await h.wait_lines(10, timeout=5)
    status = tailer.status()
    assert status["watch_mode"] == "polling" and "watch limit" in status["watch_error"]
    await h.stop()
    h.assert_exactly(make_lines("P", 0, 10), "inotify watch limit: polling fallback")


async def test_watched_directory_removed_and_recreated(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    h = Harness(cfg(tmp_path, paths=[str(d / "*.log")], rescan_interval=60, poll_interval=30))
    tailer = await h.start()
    append(d / "a.log", make_lines("A", 0, 3))
    await h.wait_lines(3, timeout=5)
    (d / "a.log").unlink()
    d.rmdir()
    await wait_until(lambda: not tailer.status()["files"], what="file gone")
    d.mkdir()
    append(d / "b.log", make_lines("B", 0, 3))
    await h.wait_lines(6, timeout=5)  # far below the 60 s rescan: inotify found it
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 3) + make_lines("B", 0, 3), "glob directory deleted and recreated")


async def test_safety_net_when_inotify_events_are_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """inotify 'works' but every event is lost: periodic rescans alone must still deliver everything."""
    from agent.tail.watch import HintBox

    monkeypatch.setattr(HintBox, "on_event", lambda self, event: None)
    append(tmp_path / "a.log", make_lines("A", 0, 5))
    h = Harness(cfg(tmp_path, rescan_interval=0.1, poll_interval=5))
    tailer = await h.start()
    await h.wait_lines(5)
    assert tailer.status()["watch_mode"] == "inotify"
    append(tmp_path / "b.log", make_lines("B", 0, 5))  # new file: the directory listing changed
    await h.wait_lines(10, timeout=5)
    append(tmp_path / "a.log", make_lines("A", 5, 5))  # a write to a known file: found by a deep rescan
    await h.wait_lines(15, timeout=5)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 10) + make_lines("B", 0, 5), "all inotify events lost: rescans")
