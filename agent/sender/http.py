"""One POST of one event body: the session a sender keeps, and what an answer (or its absence) means."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from agent import __version__
from agent.lazy import ensure_loaded, lazy_import
from agent.logsetup import Redactor
from agent.sender.config import OutputConfig
from agent.sender.outcome import MAX_RESPONSE_BYTES, SendOutcome, classify

# ~10 MiB of RSS, ~0.2 s: imported in a worker thread once the agent is ready when an output sends for real
# (agent/app/outputs.py), and awaited by the first session; a dry run never imports it
if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")

JSON_HEADERS = {"Content-Type": "application/json"}


async def open_session(config: OutputConfig) -> aiohttp.ClientSession:
    """A keep-alive session for one output: at most ``concurrency`` connections, the output's TLS. aiohttp's
    import and a private CA bundle's loading run in a worker thread (they take a fifth of a second)."""
    await ensure_loaded("aiohttp")
    tls = await asyncio.to_thread(config.tls) if config.ca_file else config.tls()
    connector = aiohttp.TCPConnector(limit=config.concurrency, ssl=tls)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=config.timeout),
        headers={"User-Agent": f"dutytail/{__version__}"},
        # trust_env would re-read proxy variables and ~/.netrc in a thread on every request
        # (10% of CPU in the backlog profile); the sender resolves the proxy once instead.
        trust_env=False,
    )


async def read_bounded(response: aiohttp.ClientResponse) -> Any:
    """The answer's JSON, reading at most MAX_RESPONSE_BYTES (None when it is not JSON or longer than that:
    the connection is then dropped instead of read to its end)."""
    raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
    if len(raw) > MAX_RESPONSE_BYTES:
        response.close()
        return None
    try:
        return orjson.loads(raw) if raw else None
    except ValueError:
        return None


def transport_error(exc: BaseException, redactor: Redactor, *, maybe_delivered: bool = False) -> SendOutcome:
    """No answer: retryable; the message is redacted (aiohttp may quote the URL with its key)."""
    return SendOutcome(False, True, None, "TransportError", redactor.text(f"{type(exc).__name__}: {exc}"),
                       maybe_delivered=maybe_delivered)


async def post_event(session: aiohttp.ClientSession, url: str, body: str, proxy: str | None,
                     redactor: Redactor) -> SendOutcome:
    """POST one stored body as it is (the exact text the outbox holds) and classify the answer."""
    try:
        async with session.post(url, data=body.encode("utf-8"), headers=JSON_HEADERS, proxy=proxy,
                                allow_redirects=False) as response:
            return classify(response.status, await read_bounded(response), response.headers)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        # Only a refused or failed connection proves the request never left; a timeout or a connection cut
        # after sending may still be processed by the server, later than newer events of the key.
        return transport_error(exc, redactor, maybe_delivered=not isinstance(exc, aiohttp.ClientConnectorError))
