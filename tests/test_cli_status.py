"""`dutytail status` and `dutytail send-test` (agent/cli.py) against a running agent, and tailing errors in
the status output.

The installed command runs as a real subprocess where it is the subject, in-process otherwise
(``cli_in_process``: same `agent.cli.main`, cheaper); the tailing-errors test renders an in-process Agent's
/status document (quick and deterministic).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent import cli as dutytail_cli
from agent.app import Agent
from agent.config import parse_config
from tests.conftest import free_port, wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import append, cli_in_process, config_text, eventually, logs_dir, outbox_empty, run_cli, started


async def test_status_and_send_test_commands(tmp_path: Path, fake: FakeFlashduty, agent_process: Any,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))
    append(app, "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    await eventually(lambda: outbox_empty(agent), 5, "outbox drained")

    shown = await run_cli(agent, "status", "-c", "config.yaml")  # the installed command, as an operator runs it
    assert shown.code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"dutytail {__version__}  ok  up ")
    assert lines[0].endswith(f"host {event['labels']['host']}")
    assert "outbox: 0 queued, oldest 0s, 0 dead letters" in shown.stdout
    assert any(line.startswith("output default: sent 1, failed 0, last success ") for line in lines), lines
    assert any(line.startswith("source app (FileSource, from ")
               and "config.yaml): 1 files, format raw, matcher " in line for line in lines), lines
    assert f"  {app}  open  offset {app.stat().st_size}  lag 0 bytes" in lines
    assert "open alerts: 1" in lines
    assert f"  Critical app/db-timeout  count 1  key {event['alert_key']}" in lines
    assert "integration_key" not in shown.stdout

    code, tested = await cli_in_process(agent, capsys, monkeypatch, "send-test")
    assert code == 0, tested
    info, ok = fake.events[1:3]
    assert (info["event_status"], ok["event_status"]) == ("Info", "Ok")
    assert info["alert_key"] == ok["alert_key"] and info["alert_key"].startswith("dutytail-send-test-")
    ids = [r.request_id for r in fake.requests if r.accepted][1:3]
    assert tested.splitlines() == [
        f"output default: Info event OK — HTTP 200 request_id={ids[0]}",
        f"output default: Ok event OK — HTTP 200 request_id={ids[1]}",
    ]

    fake.reject_key()
    code, rejected = await cli_in_process(agent, capsys, monkeypatch, "send-test")
    assert code != 0
    assert "output default: Info event REJECTED — HTTP 400 InvalidParameter: integration_key is not a valid one " \
        "request_id=" in rejected, rejected
    assert "integration_key=" not in rejected


async def test_status_command_shows_tailing_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A rendering bug: an in-process agent's /status document is enough (and quick).
    logs, _ = logs_dir(tmp_path)
    (logs / "gone.log").symlink_to(tmp_path / "rotated-away" / "gone.log")
    monkeypatch.chdir(tmp_path)
    text = config_text(app_paths='["./logs/*.log"]').replace("${DUTYTAIL_TEST_HEALTH_PORT}", str(free_port()))
    agent = Agent(parse_config(text), stdout=io.StringIO())
    await agent.start()
    try:
        await wait_until(lambda: agent.status()["sources"]["app"]["errors"], 10, "the dangling symlink in /status")
        document = json.loads(json.dumps(agent.status(), default=str))  # what `dutytail status` fetches
    finally:
        await agent.shutdown()
    assert document["sources"]["app"]["errors"][0]["error"].startswith("dangling symlink")
    shown = dutytail_cli.render_status(document)
    assert "dangling symlink" in shown, shown


@pytest.mark.parametrize("reply", [b"[1, 2, 3]", b'{"status": "ok"}', b'"just a string"', b'{"version": 1}'])
async def test_status_of_something_that_is_not_an_agent_says_so(reply: bytes, capsys: pytest.CaptureFixture[str]
                                                               ) -> None:
    """`dutytail status --url` pointed at another service's JSON used to end in a traceback."""
    from aiohttp import web

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=reply, content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        import asyncio

        code = await asyncio.to_thread(dutytail_cli.main, ["status", "--url", url])
        err = capsys.readouterr().err
        assert code == 1 and "not with a dutytail status document" in err and "Traceback" not in err
    finally:
        await runner.cleanup()
