"""Endpoints that abuse the client: a redirect is never followed, an endless answer is never read to its end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.outbox import Commit, Outbox
from agent.sender import OutputConfig, OutputSender
from tests.conftest import wait_until
from tests.delivery_helpers import event, open_outbox, running
from tests.fake_flashduty import FakeFlashduty


class Abusive:
    """A real HTTP server on 127.0.0.1: redirects to the real fake endpoint, or streams an endless 200."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.streamed = 0
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/moved/{status}", self._moved)
        app.router.add_post("/endless", self._endless)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _moved(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        return web.Response(status=int(request.match_info["status"]), headers={"Location": self.target})

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b"[" + b"0," * (512 * 1024)
        try:
            for _ in range(600):  # 600 MiB unless the client hangs up
                await response.write(chunk)
                self.streamed += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return response


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with open_outbox(tmp_path) as box:
        yield box


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_is_never_followed_and_the_event_is_dead_lettered(outbox: Outbox, fake: FakeFlashduty,
                                                                          status: int) -> None:
    abusive = Abusive(fake.url)
    await abusive.start()
    try:
        url = f"http://127.0.0.1:{abusive.port}/moved/{status}?integration_key=k3y-never-shown"
        sender = OutputSender(OutputConfig(push_url=url, retry_initial=0.02), outbox)
        await outbox.writer.commit(Commit(events=[event("k", 1)]))
        async with running(sender):
            await wait_until(lambda: sender.stats.dead_lettered == 1, 5, "the event dead-lettered")
        assert fake.requests == [], "the event went where the redirect pointed"
        assert abusive.requests == 1, "a permanent failure is not retried"
        rows = await outbox.dead_letters.list()
        assert [(r["status"], r["error_code"]) for r in rows] == [(status, "Redirect")]
        assert "never follows redirects" in rows[0]["message"] and "k3y-never-shown" not in rows[0]["message"]
    finally:
        await abusive.stop()


async def test_an_endless_answer_is_read_no_further_than_64_kib(outbox: Outbox) -> None:
    abusive = Abusive("")
    await abusive.start()
    try:
        sender = OutputSender(OutputConfig(push_url=f"http://127.0.0.1:{abusive.port}/endless", retry_initial=5,
                                           timeout=30), outbox)
        await outbox.writer.commit(Commit(events=[event("k", 1)]))
        async with running(sender):
            await wait_until(lambda: sender.stats.failed >= 1, 20, "the attempt to end")
            await asyncio.sleep(0)
        assert "BadResponse" in sender.stats.last_error or "2xx" in sender.stats.last_error
        # the client hung up after 64 KiB: what the server got out is bounded by the socket buffers
        assert abusive.streamed < 64 * 1024 * 1024, f"{abusive.streamed} bytes streamed: the answer was read on"
    finally:
        await abusive.stop()
