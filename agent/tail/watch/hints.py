"""The one hand-over from watcher threads to a source: hints about paths, taken by the source's loop.

inotify events arrive on watchdog's threads. They never touch a source's streams: they land here, under one
lock, and wake the source's event loop task once per batch of hints. The loop takes them all at once and hands
them to the worker thread with the next cycle. What the handler needs to filter cheaply (is this path one we
follow?) is the worker's own path index, published once per index object: the handler only looks a path up
in it (``in``), and a dict lookup while another thread changes the dict is atomic in CPython (the GIL is held
through both), so no copy of 100,000 paths is ever made. A write to a matching path the index does not hold
(yet) is handed over as a changed path too, so an index a moment old loses nothing.

One thing is done on the event thread itself: a file that appears under a watched name is *opened* at once
(``pinned``). An application that rotates its own log in an error storm (Python's RotatingFileHandler, log4j,
lumberjack) renames ``app.log`` away milliseconds after creating it; by the time the worker lists the directory
that file may be ``app.log.3``, a name no glob matches. Holding a descriptor from its creation on, the source
reads it whole wherever it is renamed to. The descriptor is handed to the worker with the hints (ownership
passes with it); a birth the handler could not open yet (renamed before the open) is followed through its
renames and opened at the name it got.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from agent.tail.globs import PathFilter
from agent.tail.identity import OPEN_FLAGS

MAX_PINNED = 256
"""Descriptors waiting for the worker at most; beyond, a birth is left to the next directory scan."""


@dataclass(slots=True)
class Hints:
    changed: set[str] = field(default_factory=set)
    """Followed paths written to: read them."""
    rescan: bool = False
    """Something appeared, moved or vanished (or a path we could not read changed): discover again."""
    overflowed: bool = False
    """Events were lost: discover with a deep scan."""
    pinned: list[tuple[str, int]] = field(default_factory=list)
    """Files that appeared under a watched name, opened by the event thread: (path then, descriptor)."""
    births: int = 0
    """Files that appeared under a watched name (created or renamed into it), pinned or not."""

    def __bool__(self) -> bool:
        return bool(self.changed or self.rescan or self.overflowed or self.pinned or self.births)


class HintBox:
    def __init__(self, paths: PathFilter) -> None:
        self._paths = paths
        self._lock = threading.Lock()
        self._hints = Hints()
        self._followed: Container[str] = frozenset()
        self._wake: Callable[[], None] | None = None
        self._signalled = False
        self._unopened: set[str] = set()
        """Paths of births the handler could not open yet (renamed on before the open): followed by name.
        Touched by the event thread only (watchdog dispatches every event of an observer on one thread)."""
        self._closed = False

    def bind(self, wake: Callable[[], None]) -> None:
        """``wake`` must be safe to call from any thread (e.g. ``loop.call_soon_threadsafe(event.set)``)."""
        self._wake = wake

    def publish_followed(self, paths: Container[str]) -> None:
        """Worker thread: the paths (and real paths) of the streams followed (its live index: see above)."""
        self._followed = paths

    def take(self) -> Hints:
        """Event loop: every hint since the last take."""
        with self._lock:
            hints, self._hints = self._hints, Hints()
            self._signalled = False
        return hints

    def on_event(self, event: Any) -> None:
        """A watchdog file system event (watchdog's thread)."""
        kind = event.event_type
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            if kind in ("created", "deleted", "moved"):
                self._add(rescan=True)
            return
        followed = self._followed
        if kind in ("modified", "closed"):
            if src in followed:
                self._add(changed=src)
            elif self._paths.included(src):
                self._add(changed=src, rescan=True)  # just followed, or e.g. a file we could not open: retry now
            return
        dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else ""
        # a created (or renamed-in) file is a new identity at that name, whatever the snapshot says was there:
        # pin it (the worker drops a descriptor of an identity it follows already)
        if kind == "created" and self._paths.included(src):
            self._add(birth=True)
            self._pin(src)
        elif kind == "moved" and dest:
            if src in self._unopened:
                self._unopened.discard(src)
                self._pin(dest)  # a birth renamed before it could be opened: open it under its new name
            elif src not in followed and self._paths.included(dest):
                self._add(birth=True)
                self._pin(dest)  # renamed into a watched name (an atomic replace): a new file there
        elif kind == "deleted":
            self._unopened.discard(src)
        if src in followed or self._paths.included(src) or (dest and (dest in followed or self._paths.included(dest))):
            self._add(rescan=True)

    def _pin(self, path: str) -> None:
        """Open a file that just appeared (event thread); the descriptor goes to the worker with the hints."""
        with self._lock:
            full = len(self._hints.pinned) >= MAX_PINNED or self._closed
        if full:
            return
        try:
            fd = os.open(path, OPEN_FLAGS)
        except FileNotFoundError:
            if len(self._unopened) >= MAX_PINNED:  # events were lost (an overflow rescans): forget stale names
                self._unopened.clear()
            self._unopened.add(path)  # renamed (or deleted) already: its rename event says where it went
            return
        except OSError:
            return  # e.g. permission denied: the scan reports it
        with self._lock:
            if not self._closed:
                self._hints.pinned.append((path, fd))
                fd = -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """No more descriptors are taken; those not handed to the worker are closed."""
        with self._lock:
            self._closed = True
            pinned, self._hints.pinned = self._hints.pinned, []
        for _path, fd in pinned:
            with contextlib.suppress(OSError):
                os.close(fd)

    def overflowed(self) -> None:
        self._add(overflowed=True)

    def rescan(self) -> None:
        self._add(rescan=True)

    def _add(self, *, changed: str | None = None, rescan: bool = False, overflowed: bool = False,
             birth: bool = False) -> None:
        with self._lock:
            if changed is not None:
                self._hints.changed.add(changed)
            self._hints.births += birth
            self._hints.rescan |= rescan
            self._hints.overflowed |= overflowed
            if self._signalled:
                return
            self._signalled = True
        wake = self._wake
        if wake is not None:
            try:
                wake()
            except RuntimeError:  # the loop closed during shutdown
                pass
