"""The health server on a real socket: routes, methods, the bearer token, and malformed requests."""

from __future__ import annotations

import asyncio
import json

from agent.health import HealthConfig, HealthServer
from tests.conftest import wait_until


async def exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def server(token: str | None = None) -> HealthServer:
    return HealthServer(HealthConfig(listen="127.0.0.1:0", token=token), summary=lambda: {"ok": True},
                        ready=lambda: (False, ["starting"]), status=lambda: {"detail": 1},
                        metrics=lambda: b"dutytail_up 1\n")


async def test_routes_methods_and_malformed_requests() -> None:
    health = server()
    await health.start()
    assert health.port
    try:
        status, headers, body = await exchange(health.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and json.loads(body) == {"ok": True}
        assert headers["content-type"].startswith("application/json") and headers["connection"] == "close"
        status, _, body = await exchange(health.port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503 and json.loads(body)["reasons"] == ["starting"]
        status, headers, body = await exchange(health.port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and body == b"dutytail_up 1\n" and headers["content-type"].startswith("text/plain")
        status, headers, body = await exchange(health.port, b"HEAD /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        assert (await exchange(health.port, b"POST /status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"))[0] == 405
        assert (await exchange(health.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 404
        assert (await exchange(health.port, b"NOT HTTP AT ALL\r\n\r\n"))[0] == 400
    finally:
        await health.stop()


async def test_token_is_required_on_every_endpoint_when_set() -> None:
    health = server(token="s3cret-token")
    await health.start()
    assert health.port
    try:
        status, _, body = await exchange(health.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 401 and b"s3cret" not in body
        wrong = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n"
        assert (await exchange(health.port, wrong))[0] == 401
        right = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n\r\n"
        assert (await exchange(health.port, right))[0] == 200
    finally:
        await health.stop()


async def test_idle_connections_are_capped_so_they_never_take_the_agents_descriptors() -> None:
    from agent.health import MAX_CONNECTIONS

    health = server()
    await health.start()
    assert health.port
    idle: list[asyncio.StreamWriter] = []
    try:
        for _ in range(MAX_CONNECTIONS + 40):  # clients that connect and never send a request
            _reader, writer = await asyncio.open_connection("127.0.0.1", health.port)
            idle.append(writer)
        await wait_until(lambda: health.refused >= 40, 5, "idle clients beyond the cap refused")
        assert len(health._clients) <= MAX_CONNECTIONS  # type: ignore[attr-defined]
        for writer in idle:
            writer.close()
        idle.clear()
        await wait_until(lambda: not health._clients, 5, "closed clients gone")  # type: ignore[attr-defined]
        status, _, body = await exchange(health.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and json.loads(body) == {"ok": True}
    finally:
        for writer in idle:
            writer.close()
        await health.stop()
