"""Pacing under both of the integration's limits, against an endpoint that enforces them."""

from __future__ import annotations

import time
from pathlib import Path

from agent.outbox import Commit, Outbox, OutboxConfig
from agent.sender import OutputSender, SlidingWindowLimiter
from tests.delivery_helpers import event, output, running
from tests.fake_flashduty import FakeFlashduty


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


async def test_sliding_window_admits_no_more_than_its_count_in_any_window() -> None:
    limiter = SlidingWindowLimiter([(3, 0.2)])
    started: list[float] = []
    for _ in range(7):
        await limiter.acquire()
        started.append(time.monotonic())
        limiter.done()
    # a send may start only once the one 3 places before it left the window (stamped when it completed)
    assert all(later - earlier >= 0.2 for earlier, later in zip(started, started[3:], strict=False))
    assert started[-1] - started[0] >= 0.4
