"""Secret redaction: the integration key never appears in any endpoint, command output or agent log, and a key
echoed back by the server is redacted in `dead-letters list`.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines. The echoed-key
reproduction uses an in-process Outbox and OutputSender because that makes it deterministic.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agent.outbox import Commit, Outbox, OutboxConfig, QueuedEvent
from agent.sender import OutputConfig, OutputSender
from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    append,
    cancel_and_wait,
    cli_in_process,
    config_text,
    eventually,
    fetch,
    logs_dir,
    run_cli,
    started,
)

SECRET = "Zq7SECRETkey-do-not-leak-4f2a91"


async def test_integration_key_never_appears_in_any_output(tmp_path: Path, agent_process: Any,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = logs_dir(tmp_path)
    async with FakeFlashduty(integration_key=SECRET, per_second=None, per_minute=None) as fake:
        agent = await started(agent_process, config_text(fake.url))
        outputs: dict[str, str] = {}

        fake.fail_next(1, 500)  # first a retryable failure...
        append(app, "ERROR timeout on orders id=1")
        await fake.wait_until(lambda: any(r.status == 500 for r in fake.requests), 10)
        fake.reject_key()  # ...then the key is refused for good: a dead letter

        async def dead_lettered() -> bool:
            return (await fetch(agent, "/healthz")).json()["dead_letters"] == 1

        await eventually(dead_lettered, 10, "the rejected event to be dead-lettered")

        for path in ("/healthz", "/readyz", "/status", "/metrics"):
            outputs[path] = (await fetch(agent, path)).text
        for command in (("status",), ("status", "--json"), ("dead-letters", "list"), ("dead-letters", "list", "--json"),
                        ("check-config",), ("send-test",)):
            _, outputs[" ".join(command)] = await cli_in_process(agent, capsys, monkeypatch, *command)
        outputs["agent stdout+stderr"] = agent.logs()

    assert "integration_key=***" in json.loads(outputs["/status"])["outputs"]["default"]["url"]
    assert "HTTP 400 InvalidParameter" in outputs["dead-letters list"]
    assert "InvalidParameter" in outputs["send-test"] and "500" in outputs["agent stdout+stderr"]
    assert "integration_key=***" in outputs["check-config"]
    leaks = [name for name, text in outputs.items() if SECRET in text]
    assert leaks == [], f"the integration key appears in: {leaks}"


async def test_key_echoed_by_the_server_is_redacted_in_dead_letters_list(tmp_path: Path) -> None:
    async with FakeFlashduty(integration_key=SECRET, per_second=None, per_minute=None) as fake:
        fake.fail_next(1, 400, "InvalidParameter", message=f"integration_key {SECRET} is not a valid one")
        box = Outbox(tmp_path / "state", OutboxConfig())
        await box.open()
        sender = OutputSender(OutputConfig(push_url=fake.url, retry_initial=0.02, retry_max=0.2), box)
        task = asyncio.create_task(sender.run())
        try:
            body = {"title_rule": "t", "event_status": "Critical", "alert_key": "k1"}
            await box.writer.commit(Commit(events=[QueuedEvent(output="default", alert_key="k1", body=body)]))
            await wait_until(lambda: box.stats.dead_letters == 1, 10, "a dead letter")
        finally:
            await cancel_and_wait(task)
            await sender.close()
            await box.close()
        config = tmp_path / "config.yaml"
        config.write_text(f"state_dir: ./state\nflashduty:\n  push_url: {fake.url}\n")
    listed = await run_cli(tmp_path, "dead-letters", "list", "-c", "config.yaml")
    assert listed.code == 0 and "InvalidParameter" in listed.stdout, listed.output
    assert SECRET not in listed.output
