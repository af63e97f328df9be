"""`dutytail send-test`: one POST without queueing or retries, reporting plainly what the API said."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.lazy import lazy_import
from agent.logsetup import Redactor
from agent.sender.config import OutputConfig, resolve_proxy
from agent.sender.http import read_bounded, transport_error
from agent.sender.outcome import SendOutcome, classify

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")


async def send_once(config: OutputConfig, body: dict[str, Any], redactor: Redactor) -> SendOutcome:
    """One POST without queueing or retries (`dutytail send-test`): report what the API said, plainly."""
    url = config.resolved_url()
    connector = aiohttp.TCPConnector(ssl=config.tls())
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=config.timeout),
                                     trust_env=False) as session:
        try:
            async with session.post(url, json=body, proxy=resolve_proxy(url, config.proxy),
                                    allow_redirects=False) as response:
                return classify(response.status, await read_bounded(response), response.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return transport_error(exc, redactor)
