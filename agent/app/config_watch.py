"""Reload when the config changes: the main file, and the files its ``include`` globs match (a file added,
changed or removed). inotify on their directories (on the agent's shared inotify hub) catches in-place edits
and atomic renames (how Ansible, Salt and Puppet deploy); a 1 s stat() of the main file and the globs covers
file systems without inotify, and glob directories that do not exist yet."""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import glob
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


Signature = tuple[tuple[str, tuple[int, int, int] | None], ...]


def _signatures(target: Path, globs: list[str]) -> Signature:
    """The main file and every file the include globs match now, with what each looks like."""
    found = [(str(target), _signature(target))]
    for pattern in globs:
        found += [(p, _signature(Path(p))) for p in sorted(glob.glob(pattern))]
    return tuple(found)


def _glob_dir(pattern: str) -> str:
    """The directory to watch for a glob: its longest leading part without wildcards."""
    parts = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "/"


class _Handler:
    """watchdog handler (its thread): a write to the file, or to a file an include glob matches, wakes the
    watch on the event loop."""

    def __init__(self, target: Path, globs: list[str], wake: Callable[[], None]) -> None:
        self._path, self._name = str(target), target.name
        self.globs = globs
        self._wake = wake

    def dispatch(self, event: Any) -> None:
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")} - {""}
        if self._path in paths or self._name in {os.path.basename(p) for p in paths} or any(
                fnmatch.fnmatch(p, g) for p in paths for g in self.globs):
            self._wake()


def _write_events() -> list[Any]:
    # Only writes matter: watchdog also reports opens and read-only closes, and reacting to those would make
    # every reader of the file (and each reload's own read) trigger another reload.
    from watchdog.events import FileClosedEvent, FileCreatedEvent, FileDeletedEvent, FileModifiedEvent, FileMovedEvent

    return [FileModifiedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent]


class ConfigWatch:
    def __init__(self, path: str, hub: InotifyHub, reload: Callable[..., Awaitable[bool]],
                 include_globs: Callable[[], list[str]] = list) -> None:
        """``include_globs``: the running config's absolute include globs (asked again after every reload)."""
        self.path = path
        self.hub = hub
        self.reload = reload
        self.include_globs = include_globs

    async def run(self) -> None:
        target = await asyncio.to_thread(Path(self.path).resolve)
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        handler = _Handler(target, self.include_globs(), lambda: loop.call_soon_threadsafe(changed.set))
        watches: dict[str, Any] = {}
        inotify = await asyncio.to_thread(self.hub.start)
        if not inotify:
            log.warning("config_watch_unavailable_using_mtime", error=self.hub.start_error)

        async def arm() -> None:
            """Watch the main file's directory and every include glob's (new ones after a reload)."""
            handler.globs = self.include_globs()
            wanted = {str(target.parent), *(_glob_dir(g) for g in handler.globs)}
            for directory in wanted - watches.keys():
                if not inotify or not await asyncio.to_thread(os.path.isdir, directory):
                    continue  # the 1 s look covers it (and arms it once it exists)
                try:
                    watches[directory] = await asyncio.to_thread(self.hub.schedule, handler, (directory, False),
                                                                 _write_events())
                except Exception as exc:
                    log.warning("config_watch_unavailable_using_mtime", directory=directory, error=str(exc))
            for directory in watches.keys() - wanted:
                self.hub.unschedule(handler, watches.pop(directory))

        await arm()
        seen = await asyncio.to_thread(_signatures, target, handler.globs)
        # The files may have changed between the first load and now (the watch is armed late): check once.
        await self.reload(quiet_if_unchanged=True)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # the timeout doubles as the stat() safety net
                        await changed.wait()
                changed.clear()
                if await asyncio.to_thread(_signatures, target, handler.globs) == seen:
                    await arm()  # a glob directory that appeared
                    continue
                await asyncio.sleep(SETTLE)
                changed.clear()
                seen = await asyncio.to_thread(_signatures, target, handler.globs)
                before = handler.globs
                await self.reload()
                await arm()
                if handler.globs != before:  # the reload changed what is included: these files count now
                    seen = await asyncio.to_thread(_signatures, target, handler.globs)
        finally:
            for watch in watches.values():
                self.hub.unschedule(handler, watch)
