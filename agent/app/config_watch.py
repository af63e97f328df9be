"""Reload when the config file changes: inotify on its directory (on the agent's shared inotify hub) catches
in-place edits and atomic renames (how Ansible, Salt and Puppet deploy); a 1 s stat() check covers file
systems without inotify."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from agent.tail.watch import InotifyHub

log = structlog.get_logger(__name__)

SETTLE = 0.2  # seconds for an editor or config tool to finish writing


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class _Handler:
    """watchdog handler (its thread): a write to the file wakes the watch on the event loop."""

    def __init__(self, target: Path, wake: Callable[[], None]) -> None:
        self._path, self._name = str(target), target.name
        self._wake = wake

    def dispatch(self, event: Any) -> None:
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
        if self._path in paths or self._name in {os.path.basename(p) for p in paths}:
            self._wake()


def _write_events() -> list[Any]:
    # Only writes matter: watchdog also reports opens and read-only closes, and reacting to those would make
    # every reader of the file (and each reload's own read) trigger another reload.
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent

    return [FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent]


class ConfigWatch:
    def __init__(self, path: str, hub: InotifyHub, reload: Callable[..., Awaitable[bool]]) -> None:
        self.path = path
        self.hub = hub
        self.reload = reload

    async def run(self) -> None:
        target = await asyncio.to_thread(Path(self.path).resolve)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        handler = _Handler(target, lambda: loop.call_soon_threadsafe(changed.set))
        watch = None
        if await asyncio.to_thread(self.hub.start):
            try:
                watch = await asyncio.to_thread(self.hub.schedule, handler, (str(target.parent), False),
                                                _write_events())
            except Exception as exc:
                log.warning("config_watch_unavailable_using_mtime", error=str(exc))
        else:
            log.warning("config_watch_unavailable_using_mtime", error=self.hub.start_error)
        seen = _signature(target)
        # The file may have changed between the first load and now (the watch is armed late): check once.
        await self.reload(quiet_if_unchanged=True)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # the timeout doubles as the stat() safety net
                        await changed.wait()
                changed.clear()
                if _signature(target) == seen:
                    continue
                await asyncio.sleep(SETTLE)
                changed.clear()
                seen = _signature(target)
                await self.reload()
        finally:
            if watch is not None:
                self.hub.unschedule(handler, watch)
