"""The inotify backend: one hub per agent, shared by every file source (and the config watch).

watchdog reads every watch of the process through one inotify descriptor (``InotifyFD``), so an overflow of
its queue loses events of every watch at once. watchdog only *logs* the overflow; the hub turns that log
record into one count (``overflows``) and a deep rescan hint to every subscribed source.

The file sources do not use watchdog's observer (an emitter thread per scheduled directory, and a recursive
schedule that skips, silently, a subdirectory it cannot watch): the hub adds one kernel watch per directory
on watchdog's shared descriptor itself (``watch_dir``), synchronously, so it knows which directories are
watched and which could not be (the per-user watch limit: ``ENOSPC``), and events go from watchdog's one
reader thread straight to the sources' hint boxes. A directory two sources watch is one kernel watch. The
config watch keeps watchdog's observer (``schedule``).

Each source holds an :class:`InotifyWatch`: the directories it asked for, which of them failed, its
:class:`HintBox`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import warnings
from typing import Any

import structlog

from agent.tail.watch.hints import HintBox

# a directory watched again under the same inode (renamed, or asked for again after it was replaced) makes
# watchdog warn that our callback replaces itself: it does, on purpose
warnings.filterwarnings("ignore", message="Callback with id", category=RuntimeWarning)

log = structlog.get_logger(__name__)

_WATCHDOG_LOGGER = "watchdog.observers.inotify_c"
RETRY_UNWATCHED = 30.0
"""Seconds before a directory that could not be watched is tried again (meanwhile it is polled)."""
MAX_COOKIES = 1024
"""Renames whose first half (IN_MOVED_FROM) waits for its second, at most."""
WatchSpec = tuple[str, bool]  # directory, recursive (the config watch's schedule)


class DirEvent:
    """What :meth:`HintBox.on_event` reads of an event (the shape of watchdog's events)."""

    __slots__ = ("dest_path", "event_type", "is_directory", "src_path")

    def __init__(self, event_type: str, src_path: str, is_directory: bool, dest_path: str = "") -> None:
        self.event_type, self.src_path = event_type, src_path
        self.is_directory, self.dest_path = is_directory, dest_path


class _Dir:
    __slots__ = ("boxes", "path", "wd")

    def __init__(self, path: str, wd: int) -> None:
        self.path, self.wd = path, wd
        self.boxes: set[HintBox] = set()


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
        self._fd: Any = None  # watchdog's shared InotifyFD
        self._mask = 0
        self._dirs: dict[str, _Dir] = {}
        self._by_wd: dict[int, _Dir] = {}
        self._cookies: dict[int, str] = {}
        self.lost = 0
        """Counts kernel watches that ended by themselves (directory deleted): sources check theirs then."""

    def start(self) -> bool:
        """Start the observer once; False (with ``start_error``) where inotify is unavailable."""
        with self._lock:
            if self._observer is not None:
                return True
            if self.start_error is not None:
                return False
            try:
                from watchdog.observers.inotify import InotifyObserver
                from watchdog.observers.inotify_c import InotifyConstants as IN
                from watchdog.observers.inotify_c import InotifyFD

                observer = InotifyObserver()
                observer.start()
                self._fd = InotifyFD.get_instance()
                self._mask = (IN.IN_MODIFY | IN.IN_CREATE | IN.IN_DELETE | IN.IN_MOVED_FROM | IN.IN_MOVED_TO
                              | IN.IN_DELETE_SELF | IN.IN_ONLYDIR | IN.IN_MASK_ADD)
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

    # --- directory watches of the file sources ----------------------------------------------------------

    def watch_dir(self, path: str, box: HintBox, renew: bool = False) -> None:
        """One kernel watch on ``path`` for ``box`` (shared with other boxes); raises OSError when it cannot
        be added (``ENOSPC``: fs.inotify.max_user_watches reached; ``EACCES``; the directory vanished).
        ``renew``: the path names another directory than when it was watched (deleted and made again)."""
        with self._lock:
            if self._fd is None:
                raise OSError(errno.ENODEV, "inotify hub is not running")
            known = self._dirs.get(path)
            if known is not None and not renew:
                known.boxes.add(box)
                return
            fd = self._fd
        wd = fd.add_callback(os.fsencode(path), self._mask, self, id(self))
        if wd < 0:  # watchdog lets EACCES through as -1
            raise OSError(errno.EACCES, f"cannot watch {path}: permission denied")
        with self._lock:
            entry = self._by_wd.get(wd)
            if entry is not None and entry.path != path:
                # the same directory under another name (renamed): the kernel gave its watch back
                if self._dirs.get(entry.path) is entry:
                    del self._dirs[entry.path]
                entry.path = path
            elif entry is None:
                entry = self._by_wd[wd] = _Dir(path, wd)
            previous = self._dirs.get(path)
            if previous is not None and previous is not entry:
                entry.boxes |= previous.boxes  # the directory there was replaced: its watchers watch this one
            self._dirs[path] = entry
            entry.boxes.add(box)

    def unwatch_dir(self, path: str, box: HintBox) -> None:
        with self._lock:
            entry = self._dirs.get(path)
            if entry is None:
                return
            entry.boxes.discard(box)
            if entry.boxes:
                return
            del self._dirs[path]
            self._by_wd.pop(entry.wd, None)
            fd = self._fd
        if fd is not None:
            with contextlib.suppress(Exception):
                fd.remove_callbacks([(entry.wd, id(self))])

    def dir_watched(self, path: str, box: HintBox) -> bool:
        entry = self._dirs.get(path)
        return entry is not None and box in entry.boxes

    # watchdog's WatchCallback protocol: called on watchdog's reader thread

    def on_event(self, event: Any) -> None:
        with self._lock:
            entry = self._by_wd.get(event.wd)
            if entry is None:
                return
            boxes = list(entry.boxes)
            directory = entry.path
            name = os.fsdecode(event.name)
            src = f"{directory}/{name}" if name else directory
            is_dir = bool(event.is_directory)
            if event.is_moved_from:
                if len(self._cookies) >= MAX_COOKIES:
                    self._cookies.clear()
                self._cookies[event.cookie] = src
                ev = DirEvent("moved", src, is_dir)
            elif event.is_moved_to:
                origin = self._cookies.pop(event.cookie, None)
                ev = DirEvent("moved", origin, is_dir, src) if origin is not None else DirEvent("created", src, is_dir)
            elif event.is_create:
                ev = DirEvent("created", src, is_dir)
            elif event.is_delete:
                ev = DirEvent("deleted", src, is_dir)
            elif event.is_modify:
                ev = DirEvent("modified", src, is_dir)
            elif event.is_delete_self:
                ev = DirEvent("deleted", directory, True)
            else:
                return
        for box in boxes:
            box.on_event(ev)

    def on_watch_deleted(self, wd: int) -> None:
        with self._lock:
            entry = self._by_wd.pop(wd, None)
            if entry is None:
                return
            if self._dirs.get(entry.path) is entry:
                del self._dirs[entry.path]
            self.lost += 1
            boxes = list(entry.boxes)
        for box in boxes:
            box.rescan()

    def on_queue_overflow(self) -> None:
        pass  # watchdog logs it too: the log listener counts it once (see _OverflowListener)

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
            fd, self._fd = self._fd, None
            wds = list(self._by_wd)
            self._dirs.clear()
            self._by_wd.clear()
        if fd is not None and wds:
            with contextlib.suppress(Exception):
                fd.remove_callbacks([(wd, id(self)) for wd in wds])
        if listener is not None:
            logging.getLogger(_WATCHDOG_LOGGER).removeHandler(listener)
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(timeout=5)


class InotifyWatch:
    """One source's directories on the shared hub: each watched, or (the watch limit) polled by the source."""

    mode = "inotify"

    def __init__(self, hub: InotifyHub, box: HintBox, source: str = "") -> None:
        self.hub = hub
        self.box = box
        self.source = source
        self.error: str | None = None
        self.settle_until = 0.0
        """Kept for callers of the watchdog-observer era: watches are armed when ``ensure`` returns."""
        self._dirs: dict[str, float] = {}
        """Directory -> 0.0 when watched, else when to try again (monotonic)."""
        self._failed: dict[str, str] = {}
        self._lost = hub.lost
        hub.subscribe(box)

    @property
    def event_driven(self) -> bool:
        return True

    def ensure(self, directory: str, renew: bool = False) -> bool:
        if self.hub.lost != self._lost:  # a kernel watch ended (its directory deleted): look at ours again
            self._lost = self.hub.lost
            for d, retry in self._dirs.items():
                if retry == 0.0 and not self.hub.dir_watched(d, self.box):
                    self._dirs[d] = -1.0  # re-added when next asked for
        retry = self._dirs.get(directory)
        if retry == 0.0 and not renew:
            return True
        now = time.monotonic()
        if retry is not None and 0 < retry and now < retry:
            return False
        try:
            self.hub.watch_dir(directory, self.box, renew=renew and retry == 0.0)
        except OSError as exc:
            if exc.errno == errno.ENOENT or exc.errno == errno.ENOTDIR:
                self._dirs.pop(directory, None)
                return False  # vanished meanwhile: the next scan will not visit it
            reason = _reason(exc)
            if not self._failed:  # once, not per directory (the watch limit fails thousands at once)
                log.warning("tail.inotify_fallback", source=self.source, directory=directory, reason=reason,
                            polled="directories that cannot be watched, every poll_interval")
            self._failed[directory] = reason
            self._dirs[directory] = now + RETRY_UNWATCHED
            self._update_error()
            return False
        self._dirs[directory] = 0.0
        if self._failed.pop(directory, None) is not None:
            if not self._failed:
                log.info("tail.inotify_recovered", source=self.source, directory=directory)
            self._update_error()
        return True

    def retain(self, wanted: set[str]) -> None:
        for directory in [d for d in self._dirs if d not in wanted]:
            if self._dirs.pop(directory) == 0.0:
                self.hub.unwatch_dir(directory, self.box)
            if self._failed.pop(directory, None) is not None:
                self._update_error()

    def _update_error(self) -> None:
        if not self._failed:
            self.error = None
            return
        first = next(iter(self._failed.values()))
        self.error = (f"{len(self._failed)} of {len(self._dirs)} directories not watched ({first}): "
                      "polled every poll_interval")

    def watched(self) -> list[str]:
        return sorted(d for d, retry in self._dirs.items() if retry == 0.0)

    def unwatched(self) -> list[str]:
        return sorted(d for d, retry in self._dirs.items() if retry != 0.0)

    def close(self) -> None:
        for directory, retry in self._dirs.items():
            if retry == 0.0:
                self.hub.unwatch_dir(directory, self.box)
        self._dirs.clear()
        self._failed.clear()
        self.hub.unsubscribe(self.box)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "inotify watch limit reached (fs.inotify.max_user_watches)"
    return exc.strerror or str(exc)
