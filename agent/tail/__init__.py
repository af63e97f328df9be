"""The file source: find files by glob, read appended lines, survive rotation and truncation, hand out
checkpoints (the contract is ``agent/source.py``; the user's view is ``docs/tailing.md``).

Rooms, each one concern: ``config`` (the ``logs:`` model), ``source`` (the asyncio shell), ``core`` (one
synchronous cycle on the worker thread), ``scan`` (globs and discovery), ``table`` (indexes, descriptor
budget), ``stream`` (one file identity's state), ``identity`` (is it still the same file, where did it go),
``opening``, ``reader`` (bytes to lines), ``multiline``, ``rotation``, ``emit`` and ``checkpoint`` (batches
and their state), ``problems`` (unreadable files), ``watch/`` (inotify and polling behind one interface).
"""

from agent.tail.config import MultilineConfig, TailConfig
from agent.tail.core import TailCore
from agent.tail.source import FileSource
from agent.tail.stats import TailStats
from agent.tail.watch import InotifyHub

__all__ = ["FileSource", "InotifyHub", "MultilineConfig", "TailConfig", "TailCore", "TailStats"]
