"""Local HTTP endpoints: ``/healthz`` (alive), ``/readyz`` (ready), ``/status`` (detail), ``/metrics``.

Bound to 127.0.0.1 by default: health output names files and alerts, which is host detail worth keeping
local. Listening elsewhere needs ``allow_remote: true`` and then a bearer token is strongly advised.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, model_validator

from agent.logsetup import REDACTOR

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


class HealthConfig(BaseModel):
    """`health:` — where the local status endpoints listen."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    listen: str = "127.0.0.1:8790"
    allow_remote: bool = False
    token: str | None = None  # bearer token required on every endpoint when set

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> HealthConfig:
        host, _ = split_listen(self.listen)
        if not _is_loopback(host) and not self.allow_remote:
            raise ValueError(f"listening on {host} exposes host details; set allow_remote: true (and a token) to do so")
        return self


def _json(data: Any, status: int = 200) -> web.Response:
    text = REDACTOR.text(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    return web.Response(text=text + "\n", status=status, content_type="application/json")


class HealthServer:
    """Serves views of the running agent. The callables are the agent's; the server holds no state."""

    def __init__(self, config: HealthConfig, *, summary: Callable[[], dict[str, Any]],
                 ready: Callable[[], tuple[bool, list[str]]], status: Callable[[], dict[str, Any]],
                 metrics: Callable[[], bytes]) -> None:
        self.config = config
        self._summary, self._ready, self._status, self._metrics = summary, ready, status, metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    def _authorised(self, request: web.Request) -> bool:
        if not self.config.token:
            return True
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.config.token}".encode())

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._authorised(request):
            return _json({"error": "unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def start(self) -> None:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_view)
        app.router.add_get("/metrics", self._metrics_view)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_listen(self.config.listen)
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        log.info("health_listening", listen=f"{host}:{self.port}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        # Answering at all proves the event loop is responsive: that is what liveness means here.
        return _json(self._summary())

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok, reasons = self._ready()
        return _json({"ready": ok, "reasons": reasons}, status=200 if ok else 503)

    async def _status_view(self, _request: web.Request) -> web.Response:
        return _json(self._status())

    async def _metrics_view(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})
