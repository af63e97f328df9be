"""Choose a source's watcher backend: inotify on the shared hub when wanted and available, else polling."""

from __future__ import annotations

from agent.tail.watch.base import Watch
from agent.tail.watch.hints import HintBox
from agent.tail.watch.inotify import InotifyHub, InotifyWatch
from agent.tail.watch.polling import PollingWatch


def open_watch(hub: InotifyHub | None, box: HintBox, *, polling_only: bool, source: str = "") -> Watch:
    if polling_only or hub is None:
        return PollingWatch("disabled by configuration")
    if not hub.start():
        return PollingWatch(hub.start_error or "inotify unavailable")  # logged by the hub's caller
    return InotifyWatch(hub, box, source)
