"""Re-sending a key's latest event after an uncertain delivery must never re-send an older state.

Real parts only: the SQLite outbox, the real sender, the fake Flashduty endpoint on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.outbox import Change, Commit, Outbox, OutboxConfig, QueuedEvent, Reassert
from agent.sender import OutputConfig, OutputSender
from agent.sender.reassert import UncertainDeliveries
from tests.fake_flashduty import FakeFlashduty


def event(key: str, status: str) -> QueuedEvent:
    return QueuedEvent(output="default", alert_key=key,
                       body={"title_rule": f"{key} is {status}", "event_status": status, "alert_key": key})


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


@pytest.mark.parametrize("newer_ok", ["committed", "committed_and_delivered"])
async def test_reassert_never_resends_a_stale_critical_after_a_newer_ok(outbox: Outbox, fake: FakeFlashduty,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         newer_ok: str) -> None:
    """The first attempt of the Critical is cut off after it was sent (uncertain), the retry is accepted, so
    the sender later queues the key's latest event again. Right before that step reaches the ordered writer,
    the engine commits the key's Ok through the same writer ("committed"), or it is committed and
    delivered before the step goes on ("committed_and_delivered"). Flashduty's last word must be the Ok:
    a stale Critical after it re-opens an alert nobody will close.

    Regression: the re-send checked for a queued event of the key and committed the old body afterwards,
    around the ordered writer; an Ok committed in between was followed by the stale Critical (on the code
    before the fix, hooking that check: ['Critical', 'Ok', 'Critical'])."""
    monkeypatch.setattr(UncertainDeliveries, "SETTLE_MARGIN", 0.5)  # the abandoned attempt lands at once
    fake.reset_next(1)  # read, then the connection dropped: the server may have processed it
    sender = OutputSender(OutputConfig(push_url=fake.url, timeout=0.2, retry_initial=0.02, retry_max=0.1), outbox)
    submit = outbox.writer.submit
    steps: list[Reassert] = []

    def the_engine_resolves_first(change: Change, on_done: object = None) -> asyncio.Future[None]:
        if not isinstance(change, Reassert) or steps:
            return submit(change)
        steps.append(change)
        if newer_ok == "committed":
            submit(Commit(events=[event("k", "Ok")]))  # the engine's newer event of the key, ordered first
            return submit(change)

        async def deliver_the_ok_then_submit() -> None:
            await submit(Commit(events=[event("k", "Ok")]))
            await fake.wait_until(lambda: fake.statuses_for("k") == ["Critical", "Ok"], 5)
            await fake.wait_until(lambda: outbox.stats.depth == 0, 5)  # its row is gone from the queue
            await submit(change)

        return asyncio.ensure_future(deliver_the_ok_then_submit())

    monkeypatch.setattr(outbox.writer, "submit", the_engine_resolves_first)
    await outbox.writer.commit(Commit(events=[event("k", "Critical")]))
    async with running(sender):
        await fake.wait_until(lambda: len(fake.events_for("k")) >= 3, 20)
        await fake.wait_until(lambda: outbox.stats.depth == 0, 5)
    statuses = fake.statuses_for("k")
    assert statuses[-1] == "Ok", statuses
    assert "Critical" not in statuses[statuses.index("Ok"):], statuses
    (step,) = steps
    if newer_ok == "committed":  # the step's own check saw the queued Ok and inserted nothing
        assert not step.queued
    else:  # nothing of the key queued any more: the body resolved at hand-off is the delivered Ok
        assert step.queued and step.body is not None and '"event_status":"Ok"' in step.body
    assert statuses == ["Critical", "Ok", "Ok"]  # the re-send is the Ok (identical: discarded server-side)
