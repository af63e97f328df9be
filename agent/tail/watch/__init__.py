"""Watcher backends of the file source (inotify, polling) behind one interface, and the hint hand-over."""

from agent.tail.watch.auto import open_watch
from agent.tail.watch.base import Watch
from agent.tail.watch.hints import HintBox, Hints
from agent.tail.watch.inotify import InotifyHub, InotifyWatch
from agent.tail.watch.polling import PollingWatch

__all__ = ["HintBox", "Hints", "InotifyHub", "InotifyWatch", "PollingWatch", "Watch", "open_watch"]
