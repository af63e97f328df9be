"""Dead letters kept with the server's answer, listed, re-queued at the back, purged."""

from __future__ import annotations

from pathlib import Path

from agent.outbox import Commit
from tests.delivery_helpers import event, open_outbox


async def test_dead_letter_moves_aside_then_retry_requeues_at_the_back_and_purge_deletes(tmp_path: Path) -> None:
    async with open_outbox(tmp_path) as box:
        woken: list[bool] = []
        box.queue.on_new_events(lambda: woken.append(True))
        await box.writer.commit(Commit(events=[event("a", 1), event("b", 2), event("c", 3)]))
        first, second, _ = await box.queue.head("default", 10)
        await box.dead_letters.add(first, status=400, error_code="InvalidParameter", message="bad",
                                   request_id="r1")
        await box.dead_letters.add(second, status=403, error_code="AccessDenied", message="no", request_id="r2")
        assert (box.stats.depth, box.stats.dead_letters) == (1, 2)
        letters = await box.dead_letters.list()
        assert [(d["alert_key"], d["status"], d["error_code"], d["request_id"], d["attempts"]) for d in letters] == [
            ("a", 400, "InvalidParameter", "r1", 1), ("b", 403, "AccessDenied", "r2", 1)]
        woken.clear()
        assert await box.dead_letters.retry([letters[0]["id"]]) == 1
        assert woken  # a running sender is told
        assert [r.alert_key for r in await box.queue.head("default", 10)] == ["c", "a"]  # at the back
        assert (box.stats.depth, box.stats.dead_letters) == (2, 1)
        assert await box.dead_letters.purge(None) == 1
        assert await box.dead_letters.list() == [] and box.stats.dead_letters == 0
