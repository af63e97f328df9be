"""The one ordered writer: submission order across submitters, group commit, backpressure, retry on a
storage error, block_sources, the shutdown barrier, and reassert steps. All against a real SQLite store;
a storage error is real too: another connection holds the file's write lock."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.outbox import (
    MAX_QUEUED_CHANGES,
    MAX_QUEUED_EVENTS,
    Change,
    Commit,
    Outbox,
    OutboxConfig,
    OutboxFull,
    PendingEvent,
    QueuedEvent,
    Reassert,
)
from tests.conftest import wait_until
from tests.delivery_helpers import event, open_outbox


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with open_outbox(tmp_path) as box:
        yield box


def numbers(rows: Sequence[PendingEvent | QueuedEvent]) -> list[int]:
    """The ``n`` label of stored rows (JSON text) or of queued events (dicts), in order."""
    return [int((json.loads(r.body) if isinstance(r.body, str) else r.body)["labels"]["n"]) for r in rows]


def groups_of(box: Outbox) -> list[list[Change]]:
    """Record every transaction the writer hands to the store (the changes in it)."""
    store = box._store
    apply, seen = store.apply_sync, []

    def recording(changes: Sequence[Change]) -> tuple[int, int]:
        seen.append(list(changes))
        return apply(changes)

    store.apply_sync = recording  # type: ignore[method-assign]
    return seen


@contextmanager
def store_thread_held(box: Outbox) -> Iterator[threading.Event]:
    """Keep the store thread busy until the block ends: whatever is handed to it waits."""
    release = threading.Event()
    box._store.submit(release.wait)
    try:
        yield release
    finally:
        release.set()


@contextmanager
def write_locked(box: Outbox) -> Iterator[None]:
    """Another connection holds the write lock: every transaction of the writer fails ("database is locked")
    after a short busy timeout, as it would on any storage error, until the block ends."""
    box._store.submit(lambda: box._store.db.execute("PRAGMA busy_timeout=20"))
    lock = sqlite3.connect(box.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        lock.rollback()
        lock.close()


async def test_submission_order_is_commit_order_across_submitters(outbox: Outbox) -> None:
    """Sources submit without waiting, a ticker waits for its commits: ids follow the order of submit()."""
    order: list[int] = []
    rng = random.Random(5)
    counter = iter(range(10_000))

    def submit_one() -> asyncio.Future[None]:
        n = next(counter)
        order.append(n)
        return outbox.writer.submit(Commit(events=[event(f"k{n % 3}", n)]))

    async def source() -> None:
        for _ in range(40):
            submit_one()
            await outbox.writer.backpressure()
            if rng.random() < 0.3:
                await asyncio.sleep(0)

    async def ticker() -> None:
        for _ in range(20):
            await submit_one()  # like the ticker's Ok: awaited, never overtakes what was submitted before

    await asyncio.gather(source(), source(), ticker(), source())
    await outbox.writer.flush()
    assert numbers(await outbox.queue.head("default", 1000)) == order
    assert len(order) == 140


async def test_everything_queued_goes_into_one_transaction(outbox: Outbox) -> None:
    groups = groups_of(outbox)
    futures = [outbox.writer.submit(Commit(events=[event("k", i)])) for i in range(50)]
    await asyncio.gather(*futures)
    assert [len(g) for g in groups] == [50]

    with store_thread_held(outbox) as release:
        first = outbox.writer.submit(Commit(events=[event("k", 50)]))
        await wait_until(lambda: len(groups) == 1 and not outbox.writer._queue, 5, "the first group handed over")
        later = [outbox.writer.submit(Commit(events=[event("k", i)])) for i in range(51, 54)]
        release.set()
        await asyncio.gather(first, *later)
    # what came while a transaction was in flight waited for it, then shared the next one
    assert len(groups) == 3 and [numbers(c.events) for c in groups[1]] == [[50]]
    assert [numbers(c.events) for c in groups[2]] == [[51], [52], [53]]
    assert numbers(await outbox.queue.head("default", 100)) == list(range(54))


async def test_empty_change_completes_at_once_and_flush_is_a_barrier(outbox: Outbox) -> None:
    groups = groups_of(outbox)
    done: list[str] = []
    assert outbox.writer.submit(Commit(), on_done=lambda: done.append("empty")).done()
    assert done == ["empty"] and groups == []  # nothing to write: no transaction
    with store_thread_held(outbox) as release:
        queued = outbox.writer.submit(Commit(events=[event("k", 1)]), on_done=lambda: done.append("queued"))
        barrier = asyncio.ensure_future(outbox.writer.flush())
        await asyncio.sleep(0.05)
        assert not barrier.done() and not queued.done()
        release.set()
        await barrier
    assert queued.done() and done == ["empty", "queued"]


async def test_backpressure_bounds_changes_and_events(outbox: Outbox) -> None:
    with store_thread_held(outbox) as release:
        outbox.writer.submit(Commit(events=[event("k", 0)]))  # handed over, stuck behind the held thread
        await wait_until(lambda: not outbox.writer._queue, 5, "the first group handed over")
        for i in range(MAX_QUEUED_CHANGES):
            outbox.writer.submit(Commit(checkpoints=[("src", f"f{i}", "{}")]))
        await asyncio.wait_for(outbox.writer.backpressure(), 1)  # at the bound: still room
        outbox.writer.submit(Commit(checkpoints=[("src", "one-more", "{}")]))
        paused = asyncio.ensure_future(outbox.writer.backpressure())
        await asyncio.sleep(0.05)
        assert not paused.done()  # over the bound: the submitter waits
        release.set()
        await asyncio.wait_for(paused, 5)
    await outbox.writer.flush()

    with store_thread_held(outbox) as release:
        outbox.writer.submit(Commit(events=[event("k", 1)]))
        await wait_until(lambda: not outbox.writer._queue, 5, "the group handed over")
        big = [QueuedEvent("default", f"b{i}", {"title_rule": "t", "event_status": "Info", "alert_key": "b"})
               for i in range(MAX_QUEUED_EVENTS + 1)]
        outbox.writer.submit(Commit(events=big))  # one change, but more events than may wait in memory
        paused = asyncio.ensure_future(outbox.writer.backpressure())
        await asyncio.sleep(0.05)
        assert not paused.done()
        release.set()
        await asyncio.wait_for(paused, 5)
    await outbox.writer.flush()
    assert outbox.stats.depth == 2 + MAX_QUEUED_EVENTS + 1
    assert len(await outbox.checkpoints("src")) == MAX_QUEUED_CHANGES + 1


async def test_storage_error_is_retried_until_the_store_writes_again(outbox: Outbox,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with write_locked(outbox):
        first = outbox.writer.submit(Commit(events=[event("k", 1)], checkpoints=[("src", "f", '{"off": 1}')]))
        await wait_until(lambda: "locked" in outbox.stats.last_error, 5, "the failed transaction recorded")
        later = outbox.writer.submit(Commit(events=[event("k", 2)]))
        await asyncio.sleep(0.3)
        assert not first.done() and not later.done()  # nothing dropped, nothing reordered: waiting
        assert "commit_failed_retrying" in capsys.readouterr().out
    await asyncio.wait_for(asyncio.gather(first, later), 10)  # the next retry (0.5 s backoff) succeeds
    assert numbers(await outbox.queue.head("default", 10)) == [1, 2]
    assert await outbox.checkpoints("src") == {"f": '{"off": 1}'}


async def test_shutdown_gives_up_on_what_the_store_cannot_write(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig())
    await box.open()
    done: list[bool] = []
    with write_locked(box):
        stuck = box.writer.submit(Commit(checkpoints=[("src", "f", "{}")]), on_done=lambda: done.append(True))
        await wait_until(lambda: "locked" in box.stats.last_error, 5, "the failed transaction recorded")
        await asyncio.wait_for(box.writer.close(), 2)  # the barrier returns: shutdown stops the retries
        with pytest.raises(OutboxFull):
            await stuck
        assert done == [True]  # a source's task_done still runs, so stopping it never hangs
        with pytest.raises(OutboxFull):  # after close, nothing is accepted any more
            await box.writer.submit(Commit(checkpoints=[("src", "g", "{}")]))
    await box.close()
    async with open_outbox(tmp_path) as again:
        assert await again.checkpoints("src") == {}  # left uncommitted: the lines are read again


async def test_close_commits_everything_submitted_before_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig())
    await box.open()
    for i in range(10):
        box.writer.submit(Commit(events=[event("k", i)]))  # nobody waits for these
    await box.close()
    async with open_outbox(tmp_path) as again:
        assert numbers(await again.queue.head("default", 100)) == list(range(10))


async def test_block_sources_gives_up_at_shutdown(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig(max_bytes=200, on_full="block_sources"))
    await box.open()
    await box.writer.commit(Commit(events=[event("a", 1), event("b", 2)]))
    blocked = box.writer.submit(Commit(events=[event("c", 3)]))
    await asyncio.sleep(0.1)
    assert not blocked.done()
    await asyncio.wait_for(box.close(), 2)
    with pytest.raises(OutboxFull):
        await blocked
    assert box.stats.depth == 2 and box.stats.dropped == {}


async def test_reassert_checks_and_inserts_in_the_writers_transaction(outbox: Outbox) -> None:
    latest = {"k": '{"event_status":"Critical"}'}

    def step() -> Reassert:
        return Reassert("default", "k", lambda: latest.get("k"))

    queued = await outbox.queue.head("default", 1)
    assert queued == []
    # an event of the key earlier in the same group: the step sees it and inserts nothing
    first = step()
    outbox.writer.submit(Commit(events=[event("k", 1)]))
    await outbox.writer.submit(first)
    assert first.body is not None and not first.queued and outbox.stats.depth == 1
    # still queued from an earlier transaction: nothing either
    second = step()
    await outbox.writer.submit(second)
    assert not second.queued
    (row,) = await outbox.queue.head("default", 10)
    await outbox.queue.delivered([row.id])
    # nothing of the key queued: the body is the one known when the group is handed over, not at submit
    third = step()
    outbox.writer.submit(third)
    latest["k"] = '{"event_status":"Ok"}'  # delivered after submit(), before the hand-off
    await outbox.writer.flush()
    assert third.queued and third.body == '{"event_status":"Ok"}'
    (row,) = await outbox.queue.head("default", 10)
    assert row.body == '{"event_status":"Ok"}' and outbox.stats.depth == 1
    # an event of another output does not count
    other = Reassert("other", "k", lambda: latest["k"])
    await outbox.writer.submit(other)
    assert other.queued


async def test_block_sources_waits_for_space(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig(max_bytes=200, on_full="block_sources"))
    await box.open()
    await box.writer.commit(Commit(events=[event("a", 1), event("b", 2)]))
    blocked = asyncio.create_task(box.writer.commit(Commit(events=[event("c", 3)])))
    await asyncio.sleep(0.1)
    assert not blocked.done()  # waits instead of dropping
    head = await box.queue.head("default", 10)
    await box.queue.delivered([head[0].id])
    await asyncio.wait_for(blocked, 5)
    assert box.stats.dropped == {}
    await box.close()
