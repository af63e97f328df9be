"""The POST over real network parts: TLS with a custom CA (verification on by default), HTTPS proxies."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from agent.outbox import Commit, Outbox, QueuedEvent
from agent.sender import OutputConfig, OutputSender
from tests.conftest import wait_until
from tests.delivery_helpers import open_outbox
from tests.delivery_helpers import running as senders
from tests.fake_flashduty import FakeFlashduty


def event(output: str, key: str) -> QueuedEvent:
    return QueuedEvent(output=output, alert_key=key,
                       body={"title_rule": key, "event_status": "Warning", "alert_key": key})


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with open_outbox(tmp_path) as box:
        yield box


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    return ca, server_ctx


async def test_custom_ca_bundle_and_verification_on_by_default(tmp_path: Path, outbox: Outbox,
                                                               tls: tuple[trustme.CA, ssl.SSLContext]) -> None:
    ca, server_ctx = tls
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with FakeFlashduty(ssl_context=server_ctx) as fake:
        assert fake.url.startswith("https://")
        untrusted = OutputSender(OutputConfig(name="default", push_url=fake.url, retry_initial=0.05), outbox)
        await outbox.writer.commit(Commit(events=[event("default", "k1")]))
        async with senders(untrusted):
            await wait_until(lambda: untrusted.stats.failed >= 1, 5, "TLS failure")
        assert fake.events == []  # the unknown CA was refused: verification is on by default
        assert "certificate" in untrusted.stats.last_error.lower()
        trusted = OutputSender(OutputConfig(name="default", push_url=fake.url, ca_file=str(ca_file)), outbox)
        async with senders(trusted):
            await fake.wait_for_events(1)


class ConnectProxy:
    """A real HTTP CONNECT proxy on 127.0.0.1 that records the targets it tunnelled to."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> ConnectProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            writer.close()
            return
        self.targets.append(target)
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_https_through_configured_proxy_and_environment(tmp_path: Path, outbox: Outbox,
                                                              tls: tuple[trustme.CA, ssl.SSLContext],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ca, server_ctx = tls
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with FakeFlashduty(ssl_context=server_ctx) as fake, ConnectProxy() as proxy:
        via_setting = OutputSender(OutputConfig(name="default", push_url=fake.url, ca_file=str(ca_file),
                                                proxy=proxy.url), outbox)
        await outbox.writer.commit(Commit(events=[event("default", "k1")]))
        async with senders(via_setting):
            await fake.wait_for_events(1)
        assert proxy.targets == [f"127.0.0.1:{fake.port}"]
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        via_env = OutputSender(OutputConfig(name="default", push_url=fake.url, ca_file=str(ca_file)), outbox)
        await outbox.writer.commit(Commit(events=[event("default", "k2")]))
        async with senders(via_env):
            await fake.wait_for_events(2)
        assert len(proxy.targets) == 2
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        bypass = OutputSender(OutputConfig(name="default", push_url=fake.url, ca_file=str(ca_file)), outbox)
        await outbox.writer.commit(Commit(events=[event("default", "k3")]))
        async with senders(bypass):
            await fake.wait_for_events(3)
        assert len(proxy.targets) == 2  # NO_PROXY honoured
