"""The one ordered writer of the agent: every change to the outbox's queue, checkpoints and alert state,
and the senders' re-sends after an uncertain delivery (``Reassert`` steps).

Ordering is the point. ``submit`` is synchronous and appends to one queue, so the store receives changes
in exactly the order the agent produced them: an ``Ok`` the ticker produces never gets an event id below
the event it resolves that a source batch produced just before, and the sender sends each key's events in
id order. Everything queued when the writer gets to it goes into one transaction (group commit), and only
one transaction is in flight at a time, so a later group can never overtake an earlier one.

Nothing is dropped for a storage error: a group that fails (disk full) is retried with backoff, forever,
while the queue behind it fills up to the backpressure bounds and the sources pause. Only when shutdown
begins does the writer give up (``OutboxFull``): then those checkpoints stay uncommitted and the lines are
read again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence

import structlog

from agent.outbox.model import Change, Commit, OutboxFull, Reassert, encode_body
from agent.outbox.store import Store

log = structlog.get_logger(__name__)

# Backpressure: how much may wait for the writer before submitters pause, in changes and in events (a
# 1 MiB batch of a backlog can carry 10,000+ events, each ~1.5 KiB in memory until it is on disk).
MAX_QUEUED_CHANGES = 32  # 4 x the per-source queue of 8 batches
MAX_QUEUED_EVENTS = 10_000
RETRY_INITIAL = 0.5  # seconds before the first retry of a failed transaction, doubling
RETRY_MAX = 30.0

_Item = tuple[Change, Callable[[], None] | None, asyncio.Future[None]]


class Writer:
    """Commits submitted changes in submission order, grouped, retried, with backpressure."""

    def __init__(self, store: Store, *, max_changes: int = MAX_QUEUED_CHANGES,
                 max_events: int = MAX_QUEUED_EVENTS) -> None:
        self._store = store
        self._max_changes = max_changes
        self._max_events = max_events
        self._queue: list[_Item] = []
        self._queued_events = 0
        self._writing = False  # a group is on its way to the store (or retrying)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # the queue shrank: backpressure may let submitters go on
        self._space = asyncio.Event()  # rows left the store: block_sources may write again
        self._stopping = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        store.on_freed(self._space.set)

    # --- the submitters' side --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-writer")

    def submit(self, change: Change, on_done: Callable[[], None] | None = None) -> asyncio.Future[None]:
        """Queue ``change`` behind everything submitted before it. Synchronous on purpose: the order of
        calls is the order of commits. The future completes once the change is durable, or fails with
        OutboxFull when shutdown gave up on it; ``on_done`` is called in either case (a source's
        ``task_done``, so stopping a source never waits for a store that cannot write)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            self._finish(future, on_done, OutboxFull("outbox closed"))
        elif change.empty() and not self._queue and not self._writing:
            self._finish(future, on_done, None)  # nothing to write and nothing ahead of it
        else:
            self._queue.append((change, on_done, future))
            self._queued_events += len(change.events)
            self._wake.set()
        return future

    async def commit(self, change: Change) -> None:
        """Submit and wait until the change is durable (in WAL; fsync per the mode)."""
        await self.submit(change)

    async def backpressure(self) -> None:
        """Wait while more than the bounds wait for the writer (a submitter's pause, after submit)."""
        while len(self._queue) > self._max_changes or self._queued_events > self._max_events:
            self._room.clear()
            await self._room.wait()

    async def flush(self) -> None:
        """A barrier: returns once everything submitted before it is durable or given up."""
        if not self._queue and not self._writing:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((Commit(), None, future))
        self._wake.set()
        with contextlib.suppress(OutboxFull):
            await future

    def begin_shutdown(self) -> None:
        """From now on a failing group is given up (OutboxFull) instead of retried, and block_sources
        stops waiting for room."""
        self._stopping.set()
        self._space.set()

    async def close(self) -> None:
        """Commit what is queued (giving up on what the store cannot take), then stop."""
        self.begin_shutdown()
        await self.flush()
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- the writer task ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                # a short pause lets concurrent submitters join the same transaction (group commit)
                await asyncio.sleep(self._store.config.flush_interval)
                items, self._queue = self._queue, []
                self._queued_events = 0
                self._room.set()
                self._writing = True
                error: BaseException | None = None
                try:
                    await self._write_group([change for change, _, _ in items])
                except OutboxFull as exc:
                    log.warning("changes_left_uncommitted_at_shutdown", changes=len(items))
                    error = exc
                except Exception as exc:  # a bug in one group must not stop every later commit
                    log.exception("commit_failed", changes=len(items), error=str(exc))
                    error = exc
                finally:
                    self._writing = False
                for _, on_done, future in items:
                    self._finish(future, on_done, error)

    @staticmethod
    def _finish(future: asyncio.Future[None], on_done: Callable[[], None] | None,
                error: BaseException | None) -> None:
        if on_done is not None:
            on_done()
        if future.done():  # the waiter was cancelled; the change was written anyway
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
            # The writer has logged the failure; a submitter that did not wait for the future (a source
            # batch, which only needs on_done) must not add "exception was never retrieved" noise.
            future.exception()

    async def _write_group(self, changes: Sequence[Change]) -> None:
        """One transaction for the group, retried forever on storage errors until shutdown begins."""
        changes = [c for c in changes if not c.empty()]
        if not changes:
            return
        delay = RETRY_INITIAL
        while True:
            if self._store.config.on_full == "block_sources":
                await self._wait_for_space(changes)
            try:
                added, dropped = await self._hand_off(changes)
            except sqlite3.Error as exc:
                self._store.note_write_error(exc)
                if self._store.stats.disk_full:
                    with contextlib.suppress(sqlite3.Error):
                        await self._store.call(self._store.truncate_wal_sync)
                if self._stopping.is_set():
                    raise OutboxFull(f"cannot commit while shutting down: {exc}") from exc
                log.warning("commit_failed_retrying", error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
                delay = min(delay * 2, RETRY_MAX)
                continue
            self._store.note_write_ok()
            if dropped:
                self._store.count_drop("outbox_full", dropped)
            if added:
                self._store.added()
            return

    def _hand_off(self, changes: Sequence[Change]) -> asyncio.Future[tuple[int, int]]:
        """Resolve the bodies of reassert steps and hand the group to the store thread, in one synchronous
        step (no await between the two).

        Why a reassert can never re-send a state older than one Flashduty has or will get before it: let T
        be the transaction holding the step, handed over now, and X the row it would insert.
        - Every event of the key submitted before the step is committed before T or earlier in T, with an id
          below X. At T's check (on the store thread, inside T) each is either still queued, and then T
          inserts nothing (that newer event goes out anyway, after the abandoned attempt could land), or its
          row is gone.
        - A row leaves the queue only through a job on the same store thread, and the thread runs jobs in
          hand-off order. For a delivered row the sender records the accepted body (``latest_body``) on the
          loop when the answer arrives, before it even creates the job that deletes the row. So a delete that
          ran before T was created before this moment, the body it delivered was recorded before the
          ``latest_body()`` below, and that call returns it or a later delivery of the key (the sender sends
          a key's events in id order: later is newer). A delivery whose delete is handed over after this
          moment still has its row at T's check, so T inserts nothing.
        - Events submitted after the step get ids above X and are sent after it.
        - Rows removed without delivery (dead-lettered, expired, dropped) never reached Flashduty, so the
          resolved body is still the newest state Flashduty accepted for the key.
        A retry after a storage error hands the group over again, and resolves again.
        """
        for change in changes:
            if isinstance(change, Reassert):
                change.body = change.latest_body()
        return self._store.submit(self._store.apply_sync, changes)

    async def _wait_for_space(self, changes: Sequence[Change]) -> None:
        """``on_full: block_sources``: hold the group (and so everything behind it) until senders free room."""
        stats, limit = self._store.stats, self._store.config.max_bytes
        new_bytes = sum(len(encode_body(e.body)) for c in changes for e in c.events)
        while new_bytes and stats.bytes + new_bytes > limit and stats.depth > 0:
            if self._stopping.is_set():
                raise OutboxFull("outbox full while shutting down")
            self._space.clear()
            await self._space.wait()
