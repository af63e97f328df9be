"""Local HTTP endpoints: ``/healthz`` (alive), ``/readyz`` (ready), ``/status`` (detail), ``/metrics``.

Bound to 127.0.0.1 by default: health output names files and alerts, which is host detail worth keeping
local. Listening elsewhere needs ``allow_remote: true`` and then a bearer token is strongly advised.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Callable
from typing import Any

import h11
import structlog

from agent.logsetup import Redactor
from agent.model import Model

log = structlog.get_logger(__name__)


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:8790`` / ``[::1]:8790`` / ``localhost:0`` -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} is out of range")
    return host, number


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HealthConfig(Model):
    """`health:` — where the local status endpoints listen."""

    enabled: bool = True
    listen: str = "127.0.0.1:8790"
    allow_remote: bool = False
    token: str | None = None  # bearer token required on every endpoint when set

    def __post_init__(self) -> None:
        host, _ = split_listen(self.listen)
        if not _is_loopback(host) and not self.allow_remote:
            raise ValueError(f"listening on {host} exposes host details; set allow_remote: true (and a token) to do so")
        if not _is_loopback(host) and not (self.token or "").strip():
            raise ValueError(f"listening on {host} (allow_remote) without a token would let anyone who reaches it "
                             f"read the agent's status: set health.token (e.g. ${{DUTYTAIL_HEALTH_TOKEN}})")


Reply = tuple[int, bytes, str]  # status, body, content type
MAX_CONNECTIONS = 64
"""Health connections served at once; more are closed at once (each would hold a descriptor)."""
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its request; an idle connection is closed after that."""

_TEXT = "text/plain; charset=utf-8"


def _json(data: Any, redactor: Redactor, status: int = 200) -> Reply:
    text = redactor.text(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    return status, (text + "\n").encode(), "application/json; charset=utf-8"


class HealthServer:
    """Serves views of the running agent. The callables are the agent's; the server holds no state.

    asyncio streams with h11 for the protocol, not aiohttp.web: the agent then imports aiohttp only when it
    first sends an event (~10 MiB of an idle agent's RSS). One request per connection, GET and HEAD.
    """

    def __init__(self, config: HealthConfig, *, summary: Callable[[], dict[str, Any]],
                 ready: Callable[[], tuple[bool, list[str]]], status: Callable[[], dict[str, Any]],
                 metrics: Callable[[], bytes], redactor: Redactor | None = None) -> None:
        self.config = config
        self.redactor = redactor if redactor is not None else Redactor([config.token or ""])
        self._summary, self._ready, self._status, self._metrics = summary, ready, status, metrics
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.refused = 0
        """Connections closed unserved because MAX_CONNECTIONS were open."""
        self.port: int | None = None

    async def start(self) -> None:
        host, port = split_listen(self.config.listen)
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        sockets = self._server.sockets or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("health_listening", listen=f"{host}:{self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            await self._server.wait_closed()

    def _route(self, method: str, target: str, authorization: str) -> Reply:
        if self.config.token and not hmac.compare_digest(authorization.encode(),
                                                         f"Bearer {self.config.token}".encode()):
            return _json({"error": "unauthorized"}, self.redactor, status=401)
        path = target.split("?", 1)[0]
        if path not in ("/healthz", "/readyz", "/status", "/metrics"):
            return 404, b"404: Not Found", _TEXT
        if method not in ("GET", "HEAD"):
            return 405, b"405: Method Not Allowed", _TEXT
        if path == "/healthz":
            # Answering at all proves the event loop is responsive: that is what liveness means here.
            return _json(self._summary(), self.redactor)
        if path == "/readyz":
            ok, reasons = self._ready()
            return _json({"ready": ok, "reasons": reasons}, self.redactor, status=200 if ok else 503)
        if path == "/status":
            return _json(self._status(), self.redactor)
        return 200, self._metrics(), _TEXT

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= MAX_CONNECTIONS:
            # Every connection holds a descriptor; slow or idle clients must never take the ones the file
            # sources need (400 of them once made the tailer lose its files). Refuse at once.
            self.refused += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        try:
            reply: Reply = 400, b"400: Bad Request", _TEXT
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    request = await self._read_request(conn, reader)
                if request is None:
                    return  # the client left without asking anything
                authorization = next((v.decode("latin-1") for k, v in request.headers if k == b"authorization"), "")
                reply = self._route(request.method.decode("ascii", "replace"),
                                    request.target.decode("ascii", "replace"), authorization)
            except (h11.RemoteProtocolError, TimeoutError):
                request = None  # answer 400 when the protocol still allows it (h11 raises otherwise)
            status, body, content_type = reply
            headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("X-Content-Type-Options", "nosniff"), ("Connection", "close")]
            data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            if request is None or request.method != b"HEAD":
                data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            writer.write(data)
            await writer.drain()
        except (OSError, h11.LocalProtocolError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._clients.discard(task)

    @staticmethod
    async def _read_request(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Request | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(16 * 1024))
                continue
            if isinstance(event, h11.Request):
                return event
            return None  # ConnectionClosed before a request
