"""The file source as the agent sees it: an asyncio shell around the worker thread that does the tailing.

Threads, and what crosses between them:

* the event loop runs :meth:`FileSource.run`: it takes the hints, hands a cycle to the worker, puts the
  cycle's batches on the bounded queue (backpressure), and sleeps until a hint or the cycle's deadline;
* the worker thread (one per source) runs every :class:`TailCore` method and owns all tailing state;
* watchdog's threads only put hints in the core's :class:`HintBox` (one lock), which wakes the loop.

A FileSource is single-use: after :meth:`run` is cancelled, :meth:`close` hands out what may still be handed
out and frees every resource; a new one is built from the committed checkpoints.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent.source import Batch, Checkpoint
from agent.tail.config import TailConfig
from agent.tail.core import CycleResult, TailCore
from agent.tail.emit import Emission
from agent.tail.stats import TailStats
from agent.tail.stream import Stream
from agent.tail.watch import InotifyHub

T = TypeVar("T")

STATUS_FILES = 1000
"""Files listed per source in ``status()`` (and ``/status``) at most; ``files_total`` counts them all."""
STATUS_DIRS = 100
"""Directories named in ``status()`` at most (``watched_count`` and ``unwatched_dirs`` count them all)."""


class FileSource:
    """Tail the files of one :class:`TailConfig` (see ``docs/tailing.md``).

    ``hub``: the agent's shared inotify observer (one is made for this source alone when None).
    ``force_polling`` (or ``config.inotify = False``) skips inotify entirely, as if it were unavailable.
    """

    def __init__(self, config: TailConfig, checkpoints: dict[str, Checkpoint], *, is_first_start: bool,
                 stats: TailStats | None = None, force_polling: bool = False, hub: InotifyHub | None = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else TailStats()
        self._core = TailCore(config, checkpoints, is_first_start=is_first_start, stats=self.stats)
        self._polling_only = force_polling or not config.inotify
        self._hub = hub
        self._own_hub = False
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: concurrent.futures.Future[Any] | None = None
        self._unput: collections.deque[Emission] = collections.deque()
        """Batches of the last cycle not yet on the queue (their streams must not flush records at close)."""
        self._started = False
        self._closed = False

    @property
    def first_scan_done(self) -> bool:
        """The first scan has opened every matching file (with ``start_at: end``, fixed where reading starts):
        until then a line written now might be taken for history and skipped, so the agent is not ready."""
        return self._core.first_scan_done

    async def run(self, queue: asyncio.Queue[Batch]) -> None:
        """Put batches on ``queue`` until cancelled."""
        if self._started:
            raise RuntimeError("a FileSource runs once; build a new one from the committed checkpoints")
        self._started = True
        core = self._core
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        core.box.bind(lambda: loop.call_soon_threadsafe(wake.set))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"tail-{self.config.name}")
        try:
            if self._hub is None and not self._polling_only:
                self._hub, self._own_hub = InotifyHub(), True
            await self._call(core.start_watching, self._hub, self._polling_only)
            while True:
                wake.clear()
                result: CycleResult = await self._call(core.cycle, core.box.take())
                self._unput.extend(result.emitted)
                while self._unput:
                    await queue.put(self._unput[0].batch)
                    self._unput.popleft()
                if result.busy:
                    await asyncio.sleep(0)
                    continue
                delay = result.deadline - time.monotonic()
                if delay > 0 and not wake.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await wake.wait()
        finally:
            core.stopping = True

    async def close(self, queue: asyncio.Queue[Batch] | None = None) -> None:
        """Finish after :meth:`run` was cancelled: hand out complete multiline records (when ``queue`` is given
        and every earlier batch of their stream reached it), then close descriptors and stop watching. A
        container record whose runtime has not written its final part yet is not handed out: the restart
        re-reads it from its first part (see ``agent/tail/partials.py``)."""
        if self._closed:
            return
        self._closed = True
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(inflight)
        core = self._core
        if self._executor is None:
            core.release()
            return
        try:
            if queue is not None:
                undelivered = {e.stream for e in self._unput if e.stream is not None}
                for emission in await self._call(core.final_records, undelivered):
                    await queue.put(emission.batch)
        finally:
            await self._call(core.release)
            self._executor.shutdown(wait=False)
            if self._own_hub and self._hub is not None:
                self._hub.stop()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._executor is not None
        future = self._executor.submit(fn, *args)
        self._inflight = future
        return await asyncio.wrap_future(future)

    def summary(self, max_files: int = 0) -> dict[str, Any]:
        """:meth:`status` without the per-file list (the agent's own looks: self alerts, /healthz, metrics)."""
        return self.status(max_files)

    def status(self, max_files: int = STATUS_FILES) -> dict[str, Any]:
        """Health view: per-file position and lag, descriptor use, watch mode, errors and counters.
        Read on the event loop from the worker's state: a snapshot, never a mutation.

        Cheap at any number of files: ``files`` lists at most ``max_files`` (files that cannot be read,
        draining and lagging ones first, then the others in the order they were found), ``files_total`` says
        how many there are and ``files_omitted`` how many are not listed. ``behind`` lists every stream with
        bytes on disk not handed on (what the self-watch measures lag on) and ``stream_errors`` every stream
        whose reads fail; both come from sets the worker keeps, so nothing here walks every stream."""
        core = self._core
        table = core.table
        problems = sorted(dict(core.problems.by_path).items())
        listed: dict[Stream, None] = {}
        attention = list(table.attention)
        behind = sorted(list(table.behind), key=lambda f: f.consumed - f.size)
        for group in (attention, behind):
            for f in group:
                if len(listed) >= max_files:
                    break
                listed[f] = None
        if len(listed) < max_files:
            for f in list(table.streams):
                if len(listed) >= max_files:
                    break
                listed[f] = None
        files = [_file_status(f) for f in listed]
        for path, error in problems[:max_files]:
            # Files (or directories) we cannot read at all, e.g. permission denied or a dangling symlink.
            files.append({"path": path, "key": None, "offset": 0, "size": 0, "lag_bytes": 0, "open": False,
                          "state": "error", "drain_reason": None, "last_error": error})
        total = len(table.streams)
        draining = sum(1 for f in attention if f.draining)
        tailed = table.open_count + sum(1 for f in attention if f.draining and f.fd is None)
        watch = core.watch
        unwatched = watch.unwatched()
        watched = watch.watched()
        return {
            "source": self.config.name,
            "watch_mode": "inotify" if watch.event_driven and (watched or not unwatched) else "polling",
            "watch_error": watch.error,
            "watched_dirs": watched[:STATUS_DIRS],
            "watched_count": len(watched),
            "unwatched_dirs": len(unwatched),
            "unwatched": unwatched[:STATUS_DIRS],
            "open_files": table.open_count,
            "max_open_files": self.config.max_open_files,
            "waiting_for_descriptor": len(table.waiting),
            "unresolved_checkpoints": core.unresolved_count,
            "files_total": total + len(problems),
            "files_omitted": max(0, total - len(listed)) + max(0, len(problems) - max_files),
            "files_tailed": tailed,
            "files_draining": draining,
            "lag_bytes": sum(max(0, f.size - f.consumed) for f in behind),
            "last_write": ({"path": table.newest_path, "mtime": table.newest_ns / 1e9}
                           if table.newest_path else None),
            "files": files,
            "behind": [{"key": f.key, "path": f.path, "offset": f.consumed, "size": f.size} for f in behind],
            "stream_errors": [{"path": f.path, "error": f.last_error} for f in attention if f.last_error],
            "errors": [{"path": p, "error": e} for p, e in problems],
            "stats": self.stats.as_dict(),
        }


def _file_status(f: Stream) -> dict[str, Any]:
    return {
        "path": f.path, "key": f.key, "offset": f.consumed, "size": f.size,
        "lag_bytes": max(0, f.size - f.consumed), "open": f.fd is not None,
        "state": "draining" if f.draining else ("open" if f.fd is not None else "closed"),
        "drain_reason": f.drain_reason or None, "last_error": f.last_error,
    }
