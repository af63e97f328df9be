"""The safety net under inotify: what events may have missed (an overflow, a network file system, a directory
over the watch limit) is found by looking, at a cost proportional to a slice, not to everything that exists.

Once per ``rescan_interval`` :meth:`SafetyNet.check_slice` fstat()s a slice of the followed files and has the
scanner list a slice of the directories again, in turn, so every one is looked at within
``max(DEEP_EVERY, ceil(n / SWEEP_FILES))`` periods (see docs/tailing.md); files in directories that could not be
watched are checked at every scan. A check that finds news makes the stream ready; the worker reads it.
Runs on the tail worker thread only, like everything it touches.
"""

from __future__ import annotations

import math
import os

from agent.tail.scan import Scanner
from agent.tail.stream import Stream
from agent.tail.table import StreamTable

DEEP_EVERY = 6
"""Every followed file is checked (and every directory listed again) within this many ``rescan_interval``
periods while there are at most ``DEEP_EVERY * SWEEP_FILES`` files..."""
SWEEP_FILES = 2000
"""... and this many per period beyond: every file within ``ceil(files / SWEEP_FILES)`` periods (100,000
files: 50 periods, 500 s at the default 10 s). A check is one fstat() (or stat() of a closed file): inotify
is the primary signal, this only catches what it missed."""


class SafetyNet:
    def __init__(self, table: StreamTable, scanner: Scanner) -> None:
        self.table = table
        self.scanner = scanner
        self._sweep: list[Stream] = []
        self._at = 0
        """This round's streams and how far the slices got through them."""

    def has_unwatched(self) -> bool:
        """Some directory could not be watched (its files are polled, see :meth:`poll_unwatched`)."""
        return next(self.scanner.unwatched(), None) is not None

    def verify(self, f: Stream) -> None:
        """One file checked without an event: news (size, mtime, deleted) makes it ready; a name that no longer
        leads to it makes its directory listed again at the next scan (not at once: a path that keeps failing
        must not make a loop of rescans)."""
        try:
            if f.fd is not None:
                st = os.fstat(f.fd)
                if st.st_nlink == 0:
                    self.table.ready[f] = None
                    self.scanner.mark_stale(os.path.dirname(f.path))
                    return
            else:
                st = os.stat(f.path)
                if (st.st_dev, st.st_ino) != f.ident:
                    self.scanner.mark_stale(os.path.dirname(f.path))  # listed again at the next scan
                    return
        except OSError:
            self.scanner.mark_stale(os.path.dirname(f.path))
            return
        if (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            self.table.ready[f] = None

    def check_slice(self) -> None:
        """The staggered deep check, once per ``rescan_interval``: a slice of the followed files (fstat) and of
        the directories (listed again whatever their mtime), in turn, so that every one is looked at within
        ``max(DEEP_EVERY, ceil(n / SWEEP_FILES))`` periods whatever events say (see docs/tailing.md)."""
        table = self.table
        n = len(table.streams)
        budget = max(1, min(math.ceil(n / DEEP_EVERY), SWEEP_FILES))
        self.scanner.sweep(budget)
        for _ in range(budget):
            if self._at >= len(self._sweep):
                self._sweep, self._at = list(table.streams), 0
                if not self._sweep:
                    return
            f = self._sweep[self._at]
            self._at += 1
            if f in table and not f.draining and f not in table.ready:
                self.verify(f)
            if self._at >= len(self._sweep):
                self._sweep = []  # the next period starts a fresh round (new streams included)
                return

    def poll_unwatched(self) -> None:
        """Directories without a watch (none at all when polling): every followed file in them, each scan."""
        by_path = self.table.by_path
        for node in list(self.scanner.unwatched()):
            for path in node.files:
                f = by_path.get(path)
                if f is not None and not f.draining:
                    self.verify(f)
