"""OutputSender against a real HTTP endpoint: retries, ordering, dead letters, dry run, several outputs."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.outbox import Commit, Outbox, QueuedEvent
from agent.sender import OutputConfig, OutputSender
from tests.conftest import wait_until
from tests.delivery_helpers import event, open_outbox, output, running
from tests.fake_flashduty import FakeFlashduty


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with open_outbox(tmp_path) as box:
        yield box


def warning(output: str, key: str) -> QueuedEvent:
    return QueuedEvent(output=output, alert_key=key,
                       body={"title_rule": key, "event_status": "Warning", "alert_key": key})


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


async def test_dry_run_prints_bodies(outbox: Outbox) -> None:
    out = io.StringIO()
    await outbox.writer.commit(Commit(events=[event("k", 1)]))
    async with running(OutputSender(OutputConfig(), outbox, stdout=out)):
        await wait_until(lambda: outbox.stats.depth == 0, 5, "printed")
    assert json.loads(out.getvalue())["alert_key"] == "k"


async def test_one_output_down_does_not_delay_another(outbox: Outbox) -> None:
    async with FakeFlashduty(per_second=None, per_minute=None) as down, \
            FakeFlashduty(per_second=None, per_minute=None) as up:
        down.fail_for(30, status=503)
        a = OutputSender(OutputConfig(name="a", push_url=down.url, retry_initial=0.05, retry_max=0.5), outbox)
        b = OutputSender(OutputConfig(name="b", push_url=up.url), outbox)
        await outbox.writer.commit(Commit(events=[warning("a", f"a{i}") for i in range(20)]))
        await outbox.writer.commit(Commit(events=[warning("b", f"b{i}") for i in range(20)]))
        async with running(a, b):
            await up.wait_for_events(20, timeout=5)
        assert down.events == [] and len(down.requests) >= 1
        assert a.status()["last_error"].startswith("503")
