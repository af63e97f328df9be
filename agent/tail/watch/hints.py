"""The one hand-over from watcher threads to a source: hints about paths, taken by the source's loop.

inotify events arrive on watchdog's threads. They never touch a source's streams: they land here, under one
lock, and wake the source's event loop task once per batch of hints. The loop takes them all at once and hands
them to the worker thread with the next cycle. What the handler needs to filter cheaply (is this path one we
follow?) is an immutable snapshot the worker publishes after each discovery.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.tail.scan import PathFilter


@dataclass(slots=True)
class Hints:
    changed: set[str] = field(default_factory=set)
    """Followed paths written to: read them."""
    rescan: bool = False
    """Something appeared, moved or vanished (or a path we could not read changed): discover again."""
    overflowed: bool = False
    """Events were lost: discover with a deep scan."""

    def __bool__(self) -> bool:
        return bool(self.changed or self.rescan or self.overflowed)


class HintBox:
    def __init__(self, paths: PathFilter) -> None:
        self._paths = paths
        self._lock = threading.Lock()
        self._hints = Hints()
        self._followed: frozenset[str] = frozenset()
        self._wake: Callable[[], None] | None = None
        self._signalled = False

    def bind(self, wake: Callable[[], None]) -> None:
        """``wake`` must be safe to call from any thread (e.g. ``loop.call_soon_threadsafe(event.set)``)."""
        self._wake = wake

    def publish_followed(self, paths: frozenset[str]) -> None:
        """Worker thread: the paths (and real paths) of the streams followed now."""
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
                self._add(rescan=True)  # e.g. chmod of a file we could not open: retry now
            return
        paths = [src]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
        if any(p in followed or self._paths.included(p) for p in paths):
            self._add(rescan=True)

    def overflowed(self) -> None:
        self._add(overflowed=True)

    def rescan(self) -> None:
        self._add(rescan=True)

    def _add(self, *, changed: str | None = None, rescan: bool = False, overflowed: bool = False) -> None:
        with self._lock:
            if changed is not None:
                self._hints.changed.add(changed)
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
