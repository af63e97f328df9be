"""The inotify backend: one watchdog observer per agent, shared by every file source (and the config watch).

Why one per agent: watchdog reads every watch of the process through one inotify descriptor, so an overflow of
its queue loses events of every watch at once. watchdog only *logs* the overflow; the hub turns that log
record into one count (``overflows``) and a deep rescan hint to every subscribed source. Sharing the observer
also shares a directory watched by two sources (one kernel watch, one emitter thread).

Each source holds an :class:`InotifyWatch`: the directories it wants, its handler, its :class:`HintBox`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import structlog

from agent.tail.scan import WatchSpec
from agent.tail.watch.hints import HintBox

log = structlog.get_logger(__name__)

_WATCHDOG_LOGGER = "watchdog.observers.inotify_c"
ARM_SETTLE_SECONDS = 2.0
"""watchdog adds an inotify watch in its emitter thread, after schedule() returns: an append in that gap
produces no event, so the source looks closer for this long after a watch was added."""


class _OverflowListener(logging.Handler):
    def __init__(self, hub: InotifyHub) -> None:
        super().__init__(logging.WARNING)
        self._hub = hub

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().lower()
        # watchdog 7.1 logs the overflow once, then once per recursive watch it reconciles: count the first
        if "overflow" in message and "reconcil" not in message:
            self._hub.overflowed()


class InotifyHub:
    """Owns the observer; thread-safe (sources schedule from their worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observer: Any = None
        self._listener: _OverflowListener | None = None
        self._handlers: dict[Any, set[Any]] = {}  # ObservedWatch -> handlers
        self._boxes: list[HintBox] = []
        self.overflows = 0
        self.start_error: str | None = None

    def start(self) -> bool:
        """Start the observer once; False (with ``start_error``) where inotify is unavailable."""
        with self._lock:
            if self._observer is not None:
                return True
            if self.start_error is not None:
                return False
            try:
                from watchdog.observers.inotify import InotifyObserver

                observer = InotifyObserver()
                observer.start()
            except Exception as exc:  # no inotify, EMFILE on inotify_init, non-Linux...
                self.start_error = f"inotify unavailable: {exc}"
                return False
            self._observer = observer
            self._listener = _OverflowListener(self)
            logging.getLogger(_WATCHDOG_LOGGER).addHandler(self._listener)
            return True

    def subscribe(self, box: HintBox) -> None:
        with self._lock:
            self._boxes.append(box)

    def unsubscribe(self, box: HintBox) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self._boxes.remove(box)

    def overflowed(self) -> None:
        with self._lock:
            self.overflows += 1
            boxes = list(self._boxes)
        log.warning("inotify_overflow_rescanning", sources=len(boxes), total=self.overflows)
        for box in boxes:
            box.overflowed()

    def schedule(self, handler: Any, spec: WatchSpec, event_filter: list[Any]) -> Any:
        with self._lock:
            if self._observer is None:
                raise RuntimeError("inotify hub is not running")
            watch = self._observer.schedule(handler, spec[0], recursive=spec[1], event_filter=event_filter)
            self._handlers.setdefault(watch, set()).add(handler)
            return watch

    def unschedule(self, handler: Any, watch: Any) -> None:
        with self._lock:
            handlers = self._handlers.get(watch)
            if self._observer is None or handlers is None:
                return
            handlers.discard(handler)
            with contextlib.suppress(Exception):
                if handlers:
                    self._observer.remove_handler_for_watch(handler, watch)
                else:
                    del self._handlers[watch]
                    self._observer.unschedule(watch)

    def alive(self, watch: Any) -> bool:
        """False when watchdog ended the watch's emitter (its directory was deleted)."""
        with self._lock:
            observer = self._observer
            return observer is not None and any(e.watch == watch and e.is_alive() for e in observer.emitters)

    def stop(self) -> None:
        with self._lock:
            observer, self._observer = self._observer, None
            listener, self._listener = self._listener, None
            self._handlers.clear()
        if listener is not None:
            logging.getLogger(_WATCHDOG_LOGGER).removeHandler(listener)
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(timeout=5)


class _Handler:
    """watchdog handler: forwards events to the source's hint box (runs on watchdog's thread)."""

    def __init__(self, box: HintBox) -> None:
        self._box = box

    def dispatch(self, event: Any) -> None:
        self._box.on_event(event)


def _event_filter() -> list[Any]:
    from watchdog.events import (
        DirCreatedEvent,
        DirDeletedEvent,
        DirMovedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
    )

    return [FileCreatedEvent, FileDeletedEvent, FileMovedEvent, FileModifiedEvent, DirCreatedEvent,
            DirDeletedEvent, DirMovedEvent]


class InotifyWatch:
    """One source's directories on the shared hub."""

    mode = "inotify"

    def __init__(self, hub: InotifyHub, box: HintBox) -> None:
        self.hub = hub
        self.box = box
        self.error: str | None = None
        self.failed: str | None = None
        """Set when a directory cannot be watched (ENOSPC: the watch limit, EACCES): fall back to polling."""
        self.settle_until = 0.0
        self._handler = _Handler(box)
        self._filter = _event_filter()
        self._watches: dict[WatchSpec, Any] = {}
        hub.subscribe(box)

    @property
    def event_driven(self) -> bool:
        return True

    def sync(self, wanted: set[WatchSpec]) -> bool:
        # A watched directory that was deleted ends its emitter: schedule it again if it came back.
        for spec, watch in list(self._watches.items()):
            if spec not in wanted or not self.hub.alive(watch):
                self.hub.unschedule(self._handler, self._watches.pop(spec))
        added = False
        for spec in wanted - set(self._watches):
            try:
                self._watches[spec] = self.hub.schedule(self._handler, spec, self._filter)
                added = True
            except Exception as exc:  # ENOSPC: watch limit; EACCES; vanished directory
                self.failed = f"cannot watch {spec[0]}: {exc}"
                return added
        if added:
            self.settle_until = time.monotonic() + ARM_SETTLE_SECONDS
        return added

    def watched(self) -> list[str]:
        return sorted(d for d, _r in self._watches)

    def close(self) -> None:
        for watch in self._watches.values():
            self.hub.unschedule(self._handler, watch)
        self._watches.clear()
        self.hub.unsubscribe(self.box)
