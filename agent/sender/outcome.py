"""What an attempt came to: success, retryable or permanent, per the Standard Alert protocol notes."""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

RETRYABLE_STATUS = {408, 425, 429}
RETRYABLE_CODES = {"RequestTooFrequently", "InternalError"}
MAX_RESPONSE_BYTES = 64 * 1024
"""Flashduty answers with a few hundred bytes; more is read no further (an endpoint streaming gigabytes
must not take the agent's memory with it)."""


@dataclass(slots=True)
class SendOutcome:
    ok: bool
    retryable: bool
    status: int | None = None
    code: str = ""
    message: str = ""
    request_id: str = ""
    retry_after: float | None = None
    alert_key: str = ""
    maybe_delivered: bool = False  # the request may have reached the server although we saw no answer


def classify(status: int, body: Any, headers: Any) -> SendOutcome:
    """Turn an HTTP answer into success / retryable / permanent, per the protocol notes."""
    error = body.get("error") if isinstance(body, dict) else None
    request_id = str(body.get("request_id", "")) if isinstance(body, dict) else ""
    retry_after = parse_retry_after(headers.get("Retry-After")) if headers is not None else None
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    if 300 <= status < 400:
        # Following a redirect would send the event (a 307 re-POSTs it whole) somewhere that is not Flashduty
        # and count it as delivered: never. The push URL is wrong (or intercepted): say what to fix.
        where = ""
        location = headers.get("Location") if headers is not None else None
        if location:
            where = f" to {urlsplit(location).hostname or 'another path'}"
        return SendOutcome(False, False, status, "Redirect",
                           f"the push URL answered HTTP {status} (a redirect{where}); dutytail never follows "
                           f"redirects: set push_url to the URL on the Flashduty integration card", request_id)
    if 200 <= status < 300:
        if not isinstance(body, dict):
            return SendOutcome(False, True, status, "BadResponse", "2xx without a JSON object body", request_id)
        if error:
            return SendOutcome(False, code in RETRYABLE_CODES, status, code or "Error", message, request_id,
                               retry_after)
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        return SendOutcome(True, False, status, request_id=request_id, alert_key=str(data.get("alert_key", "")))
    retryable = status in RETRYABLE_STATUS or status >= 500
    if not code:
        code = f"HTTP{status}"
    return SendOutcome(False, retryable, status, code, message, request_id, retry_after)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform in [0, min(cap, initial·2^attempt)] — spreads a fleet's retries after an outage."""
    ceiling = min(cap, initial * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0, ceiling)
