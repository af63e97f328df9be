"""Stopping an output's sender (agent/app/outputs.py stops them by cancelling the task): a sender cancelled
while it is being woken still stops. Found as a rare hang of the dead-letter setup now in tests/test_secrets.py;
made deterministic with an in-process Outbox and OutputSender.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from agent.outbox import Outbox, OutboxConfig
from agent.sender import OutputConfig, OutputSender
from tests.conftest import wait_until
from tests.ops_helpers import awaiting, cancel_and_wait


async def test_sender_task_stops_when_cancelled_during_a_wake_up(tmp_path: Path) -> None:
    # Found as a rare hang of this file's dead-letter setup; made deterministic here. In the agent the wake-up
    # is a commit (outbox.on_new_events) or a delivery finishing while Agent._stop_sender() cancels the task.
    box = Outbox(tmp_path / "state", OutboxConfig())
    await box.open()
    sender = OutputSender(OutputConfig(), box, stdout=io.StringIO())  # dry run: no network needed
    task = asyncio.create_task(sender.run(), name="sender")
    try:
        await wait_until(lambda: "OutputSender._sleep_or_wake" in awaiting(task), 5, "the sender to wait for work")
        sender.wake()
        task.cancel()
        await asyncio.wait({task}, timeout=2.0)
        assert task.done(), f"the cancelled sender is still running, now in {awaiting(task)}"
    finally:
        await cancel_and_wait(task)
        await sender.close()
        await box.close()
