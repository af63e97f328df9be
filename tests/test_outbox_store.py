"""The store: one transaction for events, checkpoints and alert state; drop_oldest; a corrupt file moved aside."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.outbox import Commit, Outbox, OutboxConfig
from tests.delivery_helpers import event, open_outbox


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with open_outbox(tmp_path) as box:
        yield box


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
