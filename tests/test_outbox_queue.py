"""The senders' side of the outbox: head, delivered, expiry."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Commit, Outbox, OutboxConfig
from tests.delivery_helpers import event, open_outbox


async def test_expired_events_are_dropped_and_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path, OutboxConfig(max_age=60))
    await box.open()
    await box.writer.commit(Commit(events=[event("a", 1)]))
    import time

    assert await box.queue.expire(time.time() + 61) == 1
    assert box.stats.dropped == {"expired": 1} and box.stats.depth == 0
    await box.close()


async def test_head_pages_by_id_per_output_and_delivered_frees_room(tmp_path: Path) -> None:
    async with open_outbox(tmp_path) as box:
        freed: list[bool] = []
        box._store.on_freed(lambda: freed.append(True))
        await box.writer.commit(Commit(events=[event(f"k{i}", i, output="a" if i % 2 else "b") for i in range(6)]))
        page = await box.queue.head("a", 2)
        assert [r.alert_key for r in page] == ["k1", "k3"]
        assert [r.alert_key for r in await box.queue.head("a", 10, after_id=page[-1].id)] == ["k5"]
        assert box.queue.oldest_age() is not None
        await box.queue.delivered([r.id for r in await box.queue.head("a", 10)])
        await box.queue.delivered([r.id for r in await box.queue.head("b", 10)])
        assert freed and (box.stats.depth, box.stats.bytes) == (0, 0) and box.queue.oldest_age() is None
