"""Outbox + sender against a real HTTP endpoint: retries, pacing, ordering, dead letters, corruption."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.outbox import Commit, Outbox, OutboxConfig, QueuedEvent
from agent.sender import OutputConfig, OutputSender, backoff_delay, classify, parse_retry_after
from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty


def event(key: str, n: int, status: str = "Critical") -> QueuedEvent:
    return QueuedEvent(output="default", alert_key=key,
                       body={"title_rule": f"t{n}", "event_status": status, "alert_key": key,
                             "labels": {"n": str(n)}})


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox(tmp_path, OutboxConfig())
    await box.open()
    yield box
    await box.close()


@contextlib.asynccontextmanager
async def running(sender: OutputSender) -> AsyncIterator[OutputSender]:
    task = asyncio.create_task(sender.run())
    try:
        yield sender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sender.close()


def output(fake: FakeFlashduty, **kw: object) -> OutputConfig:
    return OutputConfig(push_url=fake.url, retry_initial=0.02, retry_max=0.2, **kw)


async def test_retries_5xx_and_resets_then_delivers_once(outbox: Outbox, fake: FakeFlashduty) -> None:
    fake.fail_next(3, status=503, code="InternalError")
    fake.reset_next(1)
    await outbox.writer.commit(Commit(events=[event("k", 1)]))
    async with running(OutputSender(output(fake), outbox)):
        await fake.wait_for_events(1)
        await wait_until(lambda: outbox.stats.depth == 0, 5, "outbox drained")
    assert len(fake.events) == 1
    assert len(fake.requests) == 5


async def test_429_retry_after_is_honoured(outbox: Outbox, fake: FakeFlashduty) -> None:
    fake.fail_next(1, status=429, code="RequestTooFrequently", retry_after=0.5)
    await outbox.writer.commit(Commit(events=[event("k", 1)]))
    async with running(OutputSender(output(fake), outbox)):
        await fake.wait_for_events(1)
    first, second = fake.requests[0], fake.requests[-1]
    assert second.monotonic - first.monotonic >= 0.5


async def test_2xx_with_error_body_is_a_failure(outbox: Outbox, fake: FakeFlashduty) -> None:
    fake.error_body_next(1, code="InternalError")
    await outbox.writer.commit(Commit(events=[event("k", 1)]))
    async with running(OutputSender(output(fake), outbox)):
        await fake.wait_for_events(1)
    assert len(fake.requests) == 2


async def test_permanent_4xx_is_dead_lettered_and_does_not_block_the_queue(outbox: Outbox,
                                                                           fake: FakeFlashduty) -> None:
    bad = QueuedEvent(output="default", alert_key="bad", body={"title_rule": "x", "event_status": "Fatal",
                                                                "alert_key": "bad"})
    await outbox.writer.commit(Commit(events=[bad, event("good", 1)]))
    async with running(OutputSender(output(fake), outbox)):
        await fake.wait_for_events(1)
        await wait_until(lambda: outbox.stats.dead_letters == 1, 5, "dead letter")
    letters = await outbox.dead_letters.list()
    assert letters[0]["status"] == 400 and letters[0]["error_code"] == "InvalidParameter"
    assert letters[0]["request_id"] and letters[0]["message"]
    assert [e["alert_key"] for e in fake.events] == ["good"]


async def test_dead_letters_retry_after_key_is_fixed(outbox: Outbox, fake: FakeFlashduty) -> None:
    fake.reject_key()
    await outbox.writer.commit(Commit(events=[event("a", 1), event("b", 2)]))
    async with running(OutputSender(output(fake), outbox)):
        await wait_until(lambda: outbox.stats.dead_letters == 2, 5, "both rejected")
        assert fake.events == []
        fake.clear_faults()
        assert await outbox.dead_letters.retry(None) == 2
        await fake.wait_for_events(2)
    assert outbox.stats.dead_letters == 0


async def test_order_per_key_with_concurrency_across_keys(outbox: Outbox, fake: FakeFlashduty) -> None:
    events = [event(f"key{i % 5}", i, "Ok" if i % 3 == 2 else "Critical") for i in range(60)]
    await outbox.writer.commit(Commit(events=events))
    fake.fail_next(7, status=502)
    async with running(OutputSender(output(fake, concurrency=8), outbox)):
        await fake.wait_for_events(60, timeout=20)
    for key in {e.alert_key for e in events}:
        sent = [int(e["labels"]["n"]) for e in fake.events_for(key)]
        assert sent == sorted(sent), f"{key} out of order: {sent}"


async def test_pacing_keeps_under_both_limits(tmp_path: Path) -> None:
    async with FakeFlashduty(per_second=5, per_minute=12) as fake:
        box = Outbox(tmp_path, OutboxConfig())
        await box.open()
        await box.writer.commit(Commit(events=[event(f"k{i}", i) for i in range(12)]))
        async with running(OutputSender(output(fake, max_per_second=5, max_per_minute=12), box)):
            await fake.wait_for_events(12, timeout=15)
        await box.close()
        assert fake.rate_limited == 0  # the server never had to say 429
        times = [r.monotonic for r in fake.requests]
        assert all(sum(1 for u in times if t <= u < t + 1.0) <= 5 for t in times)


async def test_dry_run_prints_bodies(outbox: Outbox) -> None:
    out = io.StringIO()
    await outbox.writer.commit(Commit(events=[event("k", 1)]))
    async with running(OutputSender(OutputConfig(), outbox, stdout=out)):
        await wait_until(lambda: outbox.stats.depth == 0, 5, "printed")
    assert json.loads(out.getvalue())["alert_key"] == "k"


async def test_commit_is_atomic_with_checkpoints_and_alerts(outbox: Outbox) -> None:
    await outbox.writer.commit(Commit(events=[event("k", 1)], checkpoints=[("app", "f1", '{"offset": 10}')],
                               alerts=[("k", "{}")]))
    assert await outbox.checkpoints("app") == {"f1": '{"offset": 10}'}
    assert await outbox.alert_states() == {"k": "{}"}
    await outbox.writer.commit(Commit(forget_checkpoints=[("app", "f1")], forget_alerts=["k"]))
    assert await outbox.checkpoints("app") == {} and await outbox.alert_states() == {}


async def test_drop_oldest_bounds_bytes_and_counts_drops(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig(max_bytes=2000))
    await box.open()
    for i in range(50):
        await box.writer.commit(Commit(events=[event(f"k{i}", i)]))
    assert box.stats.bytes <= 2000
    assert box.stats.dropped["outbox_full"] == 50 - box.stats.depth
    head = await box.queue.head("default", 100)
    assert head[-1].alert_key == "k49"  # the newest survive
    await box.close()


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


async def test_expired_events_are_dropped_and_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig(max_age=60))
    await box.open()
    await box.writer.commit(Commit(events=[event("a", 1)]))
    import time

    assert await box.queue.expire(time.time() + 61) == 1
    assert box.stats.dropped == {"expired": 1} and box.stats.depth == 0
    await box.close()


async def test_corrupt_store_is_moved_aside_and_fresh_one_started(tmp_path: Path) -> None:
    (tmp_path / "outbox.db").write_bytes(b"this is not a database" * 100)
    box = Outbox(tmp_path, OutboxConfig())
    await box.open()
    assert box.stats.store_reset and Path(box.stats.store_reset).exists()
    await box.writer.commit(Commit(events=[event("a", 1)]))
    assert box.stats.depth == 1
    await box.close()
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_classification_and_backoff() -> None:
    assert classify(200, {"request_id": "r", "data": {"alert_key": "k"}}, {}).ok
    assert not classify(200, {"request_id": "r", "error": {"code": "InvalidParameter"}}, {}).retryable
    assert classify(429, {"error": {"code": "RequestTooFrequently"}}, {"Retry-After": "3"}).retry_after == 3
    assert classify(503, None, {}).retryable and classify(408, None, {}).retryable
    assert not classify(401, {"error": {"code": "Unauthorized"}}, {}).retryable
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("nonsense") is None
    assert all(0 <= backoff_delay(n, 1, 30) <= min(30, 2**n) for n in range(12))
