"""The watcher backends: one inotify hub per agent shared by its sources, overflows, and the hint hand-over."""

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
from agent.tail.scan import PathFilter
from agent.tail.watch import HintBox
from tests.tail_helpers import append, make_lines, wait_until


def cfg(directory: Path, name: str, **kw: object) -> TailConfig:
    # a minute between safety-net rescans: within these tests only inotify (or an overflow rescan) finds lines
    base: dict[str, object] = {"name": name, "paths": [str(directory / "*.log")], "start_at": "beginning",
                               "rescan_interval": 60, "poll_interval": 60}
    base.update(kw)
    return TailConfig.model_validate(base)


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
    running = [Running(cfg(d, d.name), hub) for d in dirs]
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
    first = Running(cfg(tmp_path, "first"), hub)
    second = Running(cfg(tmp_path, "second"), hub)
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
    assert hints.rescan and not hints.changed
    box.on_event(event("moved", tmp_path / "a.tmp", dest=str(tmp_path / "a.log")))  # an atomic rename into place
    assert box.take().rescan
    box.overflowed()
    assert box.take().overflowed
    assert not box.take()
