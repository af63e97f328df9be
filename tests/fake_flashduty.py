"""A fake Flashduty "Standard Alert" push endpoint for tests and benchmarks.

`FakeFlashduty` is a real HTTP server (aiohttp.web) bound to 127.0.0.1 that runs inside the caller's event
loop and speaks the push protocol described in ``../shared/flashduty-standard-alert.md`` (beside the repository):

* ``POST /event/push/alert/standard?integration_key=KEY`` with ``Content-Type: application/json``;
* success ``200 {"request_id": ..., "data": {"alert_key": ...}}``, errors
  ``{"request_id": ..., "error": {"code": ..., "message": ...}}`` with the documented codes;
* per-integration rate limits (sliding windows, default 100/s and 1000/min) answered with
  ``429 RequestTooFrequently``.

It is deliberately *stricter* than the real API: where the real server would silently truncate an
over-long field (title, description, label value, image URL) or where its behaviour is undocumented
(more than 50 labels, bad label keys), the fake answers ``400 InvalidParameter`` and records a protocol
violation in :attr:`FakeFlashduty.violations`. A client that relies on the server to enforce limits
therefore fails its tests.

Fault injection (see :meth:`FakeFlashduty.fail_next` and friends) lets tests simulate outages, 5xx storms,
connection resets, slow responses, ``200`` answers carrying an ``error`` and an invalidated key.

Standalone use for manual testing and benchmarks::

    python -m tests.fake_flashduty --port 18080 --key K

prints the push URL on stderr and one JSON line per accepted event on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import re
import signal
import ssl
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from aiohttp import web
from multidict import CIMultiDict

__all__ = [
    "ALLOWED_FIELDS",
    "EVENT_STATUSES",
    "PUSH_PATH",
    "FakeFlashduty",
    "RecordedRequest",
    "validate_event",
]

PUSH_PATH = "/event/push/alert/standard"
DEFAULT_KEY = "test-key-0123456789abcdef"

EVENT_STATUSES = frozenset({"Critical", "Warning", "Info", "Ok"})
ALLOWED_FIELDS = frozenset(
    {"title_rule", "event_status", "alert_key", "description", "labels", "images", "event_time"}
)
IMAGE_FIELDS = frozenset({"alt", "src", "href"})
MAX_TITLE = 512
MAX_ALERT_KEY = 255
MAX_DESCRIPTION = 2048
MAX_LABELS = 50
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 2048
MAX_IMAGE_ALT = 128
MAX_IMAGE_URL = 256
#: ``event_time`` is Unix *seconds*; anything at or above this (year 5138) is almost surely milliseconds.
MAX_EVENT_TIME = 10**11
LABEL_KEY_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

INVALID_KEY_MESSAGE = "integration_key is not a valid one"

FaultKind = Literal["fail", "reset", "error_body"]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _short(value: Any, limit: int = 48) -> str:
    """Return a repr of ``value`` cut to ``limit`` characters, for readable messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_str(problems: list[str], name: str, value: Any, max_len: int, *, non_empty: bool = False) -> None:
    """Append a problem unless ``value`` is a string of at most ``max_len`` characters."""
    if not isinstance(value, str):
        problems.append(f"{name} must be a string, got {type(value).__name__}")
        return
    if non_empty and not value.strip():
        problems.append(f"{name} must not be empty")
    if len(value) > max_len:
        problems.append(f"{name} is {len(value)} characters, limit is {max_len}")


def _check_url(problems: list[str], name: str, value: Any) -> None:
    """Append a problem unless ``value`` is an http(s) URL of at most MAX_IMAGE_URL characters."""
    _check_str(problems, name, value, MAX_IMAGE_URL)
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(f"{name} must be an http or https URL, got {_short(value)}")


def validate_event(body: Any) -> list[str]:
    """Return every protocol problem of a decoded event body (empty list: the body is valid).

    Enforces the documented limits strictly (the real server would truncate or has undocumented
    behaviour): see the module docstring.
    """
    if not isinstance(body, dict):
        return [f"body must be a JSON object, got {type(body).__name__}"]
    problems: list[str] = []
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        problems.append(f"unknown fields: {', '.join(unknown)}")

    if "title_rule" not in body:
        problems.append("title_rule is required")
    else:
        _check_str(problems, "title_rule", body["title_rule"], MAX_TITLE, non_empty=True)

    status = body.get("event_status")
    if "event_status" not in body:
        problems.append("event_status is required")
    elif status not in EVENT_STATUSES:
        problems.append(f"event_status must be one of Critical, Warning, Info, Ok; got {_short(status)}")

    if "alert_key" in body:
        _check_str(problems, "alert_key", body["alert_key"], MAX_ALERT_KEY, non_empty=True)
    elif status == "Ok":
        problems.append("alert_key is required when event_status is Ok")

    if "description" in body:
        _check_str(problems, "description", body["description"], MAX_DESCRIPTION)

    if "labels" in body:
        labels = body["labels"]
        if not isinstance(labels, dict):
            problems.append(f"labels must be an object, got {type(labels).__name__}")
        else:
            if len(labels) > MAX_LABELS:
                problems.append(f"labels has {len(labels)} entries, limit is {MAX_LABELS}")
            for key, value in labels.items():
                if len(key) > MAX_LABEL_KEY:
                    problems.append(
                        f"labels: key {_short(key)} is {len(key)} characters, limit is {MAX_LABEL_KEY}"
                    )
                if not LABEL_KEY_RE.fullmatch(key):
                    problems.append(f"labels: key {_short(key)} does not match ^[a-zA-Z_][a-zA-Z0-9_]*$")
                _check_str(problems, f"labels[{_short(key)}]", value, MAX_LABEL_VALUE)

    if "event_time" in body:
        event_time = body["event_time"]
        if not isinstance(event_time, int) or isinstance(event_time, bool):
            problems.append(f"event_time must be an integer (Unix seconds), got {type(event_time).__name__}")
        elif not 0 < event_time < MAX_EVENT_TIME:
            problems.append(f"event_time {event_time} is not plausible Unix seconds (milliseconds?)")

    if "images" in body:
        images = body["images"]
        if not isinstance(images, list):
            problems.append(f"images must be an array, got {type(images).__name__}")
        else:
            for i, image in enumerate(images):
                name = f"images[{i}]"
                if not isinstance(image, dict):
                    problems.append(f"{name} must be an object, got {type(image).__name__}")
                    continue
                extra = sorted(set(image) - IMAGE_FIELDS)
                if extra:
                    problems.append(f"{name} has unknown fields: {', '.join(extra)}")
                if "src" not in image:
                    problems.append(f"{name}.src is required")
                else:
                    _check_url(problems, f"{name}.src", image["src"])
                if "href" in image:
                    _check_url(problems, f"{name}.href", image["href"])
                if "alt" in image:
                    _check_str(problems, f"{name}.alt", image["alt"], MAX_IMAGE_ALT)
    return problems


def _reject_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads hook: reject objects with duplicate keys (ambiguous for any server)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


# --------------------------------------------------------------------------------------------------
# Records and faults
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request the fake received, and what it answered."""

    index: int  #: position in :attr:`FakeFlashduty.requests` (0-based)
    time: float  #: wall clock (``time.time()``) when the request body had been read
    monotonic: float  #: the fake's clock (rate limiting/outage clock) at the same moment
    method: str
    path: str
    query: dict[str, str]  #: query parameters (first value of each); see ``query_string`` for raw
    query_string: str
    headers: CIMultiDict[str]  #: request headers, case-insensitive
    body: bytes  #: raw request body
    status: int | None = None  #: HTTP status answered; None while in flight or when the connection was reset
    response: dict[str, Any] | None = None  #: JSON answered (None for resets and non-JSON fault bodies)
    fault: str | None = None  #: injected fault(s) applied, e.g. ``"delay(0.5s)+fail_next(503)"``, or None
    completed_at: float | None = None  #: wall clock when answered/reset; None while in flight
    client_disconnected: bool = False  #: client had gone when the (delayed) answer was ready

    def _error_field(self, name: str) -> str | None:
        """A string field of the answered ``error`` object, if any."""
        error = self.response.get("error") if self.response else None
        value = error.get(name) if isinstance(error, dict) else None
        return value if isinstance(value, str) else None

    @property
    def error_code(self) -> str | None:
        """The ``error.code`` answered, if any."""
        return self._error_field("code")

    @property
    def error_message(self) -> str | None:
        """The ``error.message`` answered, if any."""
        return self._error_field("message")

    @property
    def request_id(self) -> str | None:
        """The ``request_id`` answered, if any."""
        return self.response.get("request_id") if self.response else None

    @property
    def accepted(self) -> bool:
        """True when the request was accepted as an event."""
        return self.status == 200 and self.response is not None and "data" in self.response

    def json(self) -> Any:
        """The request body decoded as JSON, or None when it is not valid JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def summary(self) -> str:
        """One line describing this request, for failure messages."""
        if self.completed_at is None:
            outcome = "in flight"
        elif self.status is None:
            outcome = "connection reset"
        else:
            outcome = str(self.status) + (f" {self.error_code}" if self.error_code else "")
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        line = f"#{self.index} {stamp} {self.method} {self.path} -> {outcome}"
        if self.fault:
            line += f" [{self.fault}]"
        body = self.json()
        if isinstance(body, dict):
            line += f" status={body.get('event_status')!r} alert_key={_short(body.get('alert_key'), 40)}"
        if self.error_message and self.error_code == "InvalidParameter":
            line += f" ({_short(self.error_message, 120)})"
        return line


@dataclass(slots=True)
class _Fault:
    """A counted fault in the FIFO queue."""

    kind: FaultKind
    remaining: int
    status: int = 500
    code: str = "InternalError"
    message: str | None = None
    retry_after: float | str | None = None
    body: str | None = None

    def label(self) -> str:
        """Short name used in RecordedRequest.fault."""
        if self.kind == "fail":
            return f"fail_next({self.status})"
        return self.kind


@dataclass(slots=True)
class _Outage:
    """A time-based failure window on the fake's clock."""

    until: float
    status: int
    code: str
    message: str | None
    retry_after: float | str | None
    body: str | None


def ideal_drain(n: int, per_second: int, per_minute: int) -> float:
    """When the last of ``n`` requests, all ready at 0, can be accepted at the earliest under the limits
    alone: the k-th waits for the (k - per_second)-th to leave the 1 s window and for the
    (k - per_minute)-th to leave the 60 s window (windows half-open, as ``_Windows`` counts them)."""
    times: list[float] = []
    for k in range(n):
        t = times[-1] if times else 0.0
        if k >= per_second:
            t = max(t, times[k - per_second] + 1.0)
        if k >= per_minute:
            t = max(t, times[k - per_minute] + 60.0)
        times.append(t)
    return times[-1] if times else 0.0


@dataclass(slots=True)
class _Windows:
    """Sliding-window timestamps of one integration key."""

    second: collections.deque[float] = field(default_factory=collections.deque)
    minute: collections.deque[float] = field(default_factory=collections.deque)


def _retry_after_header(value: float | str) -> str:
    """Format a Retry-After value: integral numbers as delta-seconds, others verbatim."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# --------------------------------------------------------------------------------------------------
# The fake server
# --------------------------------------------------------------------------------------------------


class FakeFlashduty:
    """A Flashduty push endpoint on 127.0.0.1 with protocol checks, rate limits and fault injection.

    Use ``async with FakeFlashduty() as fd:`` (or :meth:`start`/:meth:`stop`) inside the test's event loop
    and point the client at :attr:`url`. The server can be stopped and started again: it keeps its port
    and its history, so "API unreachable" scenarios use a real refused connection.

    Request processing order: the body is read and the request recorded; then injected faults apply
    (a pending delay first, then an active :meth:`fail_for` window, else the head of the counted fault
    queue filled by :meth:`fail_next`, :meth:`reset_next` and :meth:`error_body_next`, first in first
    out); then normal handling: route (404 RouteNotFound), method (400 MethodNotAllowed), rate limits
    (429 RequestTooFrequently), Content-Type (400 InvalidContentType), integration key
    (400 InvalidParameter), body (400 InvalidParameter). Requests answered by an injected fault do not
    count against the rate limits.

    Route, method, Content-Type and body errors are *protocol violations* (client bugs) and are listed in
    :attr:`violations`; a wrong key and rate limiting are not (see :attr:`rate_limited`).
    """

    def __init__(
        self,
        *,
        integration_key: str = DEFAULT_KEY,
        port: int = 0,
        per_second: int | None = 100,
        per_minute: int | None = 1000,
        rate_limit_retry_after: float | str | None = None,
        clock: Callable[[], float] = time.monotonic,
        history: bool = True,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """Configure the fake; nothing listens until :meth:`start`.

        :param integration_key: the only key accepted (see :meth:`set_key`, :meth:`reject_key`).
        :param port: TCP port on 127.0.0.1; 0 picks a free one at the first start (then kept).
        :param per_second: sliding 1 s window limit per integration key; None disables it.
        :param per_minute: sliding 60 s window limit per integration key; None disables it.
        :param rate_limit_retry_after: Retry-After value sent with 429 answers (None: no header).
        :param clock: monotonic clock for rate-limit windows and :meth:`fail_for` (inject for tests).
        :param history: keep :attr:`requests`, :attr:`events` and :attr:`received_at`; False keeps only
            the counters (long benchmarks).
        :param on_event: called for every accepted event with
            ``{"received_at", "request_id", "alert_key", "event"}``.
        """
        self.integration_key = integration_key
        self.port = port
        self.per_second = per_second
        self.per_minute = per_minute
        self.rate_limit_retry_after = rate_limit_retry_after
        self.history = history
        self.on_event = on_event
        self.ssl_context = ssl_context  # serve HTTPS (TLS/CA-bundle tests)
        self._clock = clock

        self.events: list[dict[str, Any]] = []
        self.received_at: list[float] = []
        self.requests: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.request_count = 0
        self.accepted_count = 0
        self.rate_limited = 0

        self._key_rejected = False
        self._faults: collections.deque[_Fault] = collections.deque()
        self._delays: collections.deque[list[float]] = collections.deque()  # [remaining, seconds]
        self._outage: _Outage | None = None
        self._windows: dict[str, _Windows] = {}
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start listening on 127.0.0.1 (on the same port again after a :meth:`stop`)."""
        if self._runner is not None:
            raise RuntimeError("FakeFlashduty is already running")
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True, ssl_context=self.ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; delayed requests still pending are cut off. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._runner is not None

    async def __aenter__(self) -> FakeFlashduty:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ---------------------------------------------------------------- addresses

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (the port is known after the first :meth:`start`)."""
        if not self.port:
            raise RuntimeError("FakeFlashduty has no port yet: call start() first")
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The full push URL with the current integration key, as copied from the Flashduty console."""
        return f"{self.base_url}{PUSH_PATH}?integration_key={quote(self.integration_key, safe='')}"

    # ---------------------------------------------------------------- inspection

    def events_for(self, alert_key: str) -> list[dict[str, Any]]:
        """Accepted events whose body carried ``alert_key``, in arrival order."""
        return [e for e in self.events if e.get("alert_key") == alert_key]

    def statuses_for(self, alert_key: str) -> list[str]:
        """The ``event_status`` sequence accepted for ``alert_key``."""
        return [e["event_status"] for e in self.events_for(alert_key)]

    def describe(self, last: int = 15) -> str:
        """A multi-line summary of what the fake saw (used in timeout messages)."""
        outcomes: collections.Counter[str] = collections.Counter()
        for r in self.requests:
            if r.completed_at is None:
                outcomes["in flight"] += 1
            elif r.status is None:
                outcomes["reset"] += 1
            else:
                outcomes[f"{r.status}" + (f" {r.error_code}" if r.error_code else "")] += 1
        lines = [
            f"requests: {self.request_count} ({', '.join(f'{k}: {v}' for k, v in sorted(outcomes.items()))})",
            f"accepted events: {self.accepted_count}; rate limited: {self.rate_limited}; "
            f"violations: {len(self.violations)}",
            f"pending faults: {self.pending_faults() or 'none'}",
        ]
        if self.violations:
            lines.append("violations (last 10):")
            lines.extend(f"  {v}" for v in self.violations[-10:])
        if self.requests:
            lines.append(f"last {min(last, len(self.requests))} requests:")
            lines.extend(f"  {r.summary()}" for r in self.requests[-last:])
        return "\n".join(lines)

    def pending_faults(self) -> str:
        """Describe the faults still armed, or an empty string."""
        parts = [f"delay({seconds}s) x{int(n)}" for n, seconds in self._delays]
        if self._outage is not None:
            left = self._outage.until - self._clock()
            if left > 0:
                parts.append(f"fail_for({self._outage.status}) {left:.2f}s left")
        parts.extend(f"{f.label()} x{f.remaining}" for f in self._faults)
        if self._key_rejected:
            parts.append("reject_key")
        return ", ".join(parts)

    async def _wait(self, predicate: Callable[[], bool], within: float) -> bool:
        """Wait until ``predicate()`` is true; False on timeout.

        Re-evaluated whenever a request arrives or completes, and at least every 0.1 s.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed
            if predicate():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.1))

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` is true; raise AssertionError with :meth:`describe` on timeout.

        The predicate is re-evaluated whenever a request arrives or completes, and at least every
        0.1 s (so predicates over state outside the fake work too).
        """
        if not await self._wait(predicate, timeout):
            name = getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"condition {name} not met within {timeout:g}s\n{self.describe()}")

    async def wait_for_events(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until at least ``n`` events were accepted; return a copy of all accepted events.

        Raises AssertionError with a summary of requests, faults and violations on timeout.
        """
        if not await self._wait(lambda: self.accepted_count >= n, timeout):
            raise AssertionError(
                f"expected at least {n} accepted events within {timeout:g}s, got {self.accepted_count}\n"
                f"{self.describe()}"
            )
        return list(self.events)

    # ---------------------------------------------------------------- fault injection

    def fail_next(
        self,
        n: int,
        status: int = 500,
        code: str = "InternalError",
        retry_after: float | str | None = None,
        *,
        message: str | None = None,
        body: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and an error body with ``code``.

        ``retry_after`` adds a Retry-After header (number: delta-seconds; str: sent verbatim, e.g. an
        HTTP date). ``body`` replaces the JSON error with a text/html body (a gateway error page).
        """
        self._faults.append(_Fault("fail", n, status, code, message, retry_after, body))

    def fail_for(
        self,
        seconds: float,
        status: int = 500,
        code: str = "InternalError",
        retry_after: float | str | None = None,
        *,
        message: str | None = None,
        body: str | None = None,
    ) -> None:
        """Answer every request like :meth:`fail_next` for the next ``seconds`` (an outage window)."""
        self._outage = _Outage(self._clock() + seconds, status, code, message, retry_after, body)

    def reset_next(self, n: int) -> None:
        """Read the next ``n`` requests, then close their connection without answering."""
        self._faults.append(_Fault("reset", n))

    def error_body_next(self, n: int, code: str = "InternalError", message: str | None = None) -> None:
        """Answer the next ``n`` requests with HTTP 200 whose body carries an ``error`` (not accepted)."""
        self._faults.append(_Fault("error_body", n, 200, code, message))

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the next ``n`` requests for ``seconds`` before handling them.

        A delay is a modifier: after it, the request is handled normally (or by the next queued fault).
        A request whose client gave up meanwhile is still processed, as a real server would: its event
        is accepted (``client_disconnected`` is set on the record), so delivery is at-least-once.
        """
        self._delays.append([n, seconds])

    def reject_key(self) -> None:
        """Invalidate the current key: 400 InvalidParameter for every request until set_key/clear_faults."""
        self._key_rejected = True

    def set_key(self, integration_key: str) -> None:
        """Accept ``integration_key`` (only), e.g. after a key rotation; :attr:`url` follows."""
        self.integration_key = integration_key
        self._key_rejected = False

    def clear_faults(self) -> None:
        """Drop every armed fault, outage window and key rejection."""
        self._faults.clear()
        self._delays.clear()
        self._outage = None
        self._key_rejected = False

    def reset_rate_limits(self) -> None:
        """Forget the rate-limit windows."""
        self._windows.clear()

    # ---------------------------------------------------------------- handling

    def _notify(self) -> None:
        """Wake every waiter of wait_until."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _over_limit(self, key: str) -> bool:
        """Check and record one request against the sliding windows of ``key``."""
        now = self._clock()
        windows = self._windows.setdefault(key, _Windows())
        while windows.second and windows.second[0] <= now - 1.0:
            windows.second.popleft()
        while windows.minute and windows.minute[0] <= now - 60.0:
            windows.minute.popleft()
        if (self.per_second is not None and len(windows.second) >= self.per_second) or (
            self.per_minute is not None and len(windows.minute) >= self.per_minute
        ):
            return True
        windows.second.append(now)
        windows.minute.append(now)
        return False

    def _take_delay(self) -> float | None:
        """Consume one pending delay, if any."""
        if not self._delays:
            return None
        head = self._delays[0]
        head[0] -= 1
        if head[0] <= 0:
            self._delays.popleft()
        return head[1]

    def _take_fault(self) -> _Fault | None:
        """Consume one use of the head of the fault queue, if any."""
        if not self._faults:
            return None
        head = self._faults[0]
        head.remaining -= 1
        if head.remaining <= 0:
            self._faults.popleft()
        return head

    def _respond(
        self,
        record: RecordedRequest,
        status: int,
        payload: dict[str, Any],
        retry_after: float | str | None = None,
    ) -> web.Response:
        """Build a JSON answer and record it."""
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = _retry_after_header(retry_after)
        record.status = status
        record.response = payload
        return web.json_response(payload, status=status, headers=headers)

    def _error(
        self,
        record: RecordedRequest,
        status: int,
        code: str,
        message: str,
        retry_after: float | str | None = None,
    ) -> web.Response:
        """Build an error answer and record it."""
        payload = {"request_id": uuid.uuid4().hex, "error": {"code": code, "message": message}}
        return self._respond(record, status, payload, retry_after)

    def _violation(
        self, record: RecordedRequest, status: int, code: str, problems: list[str]
    ) -> web.Response:
        """Record protocol violations and answer them."""
        self.violations.extend(f"request #{record.index}: {p}" for p in problems)
        return self._error(record, status, code, "; ".join(problems))

    def _fail(
        self,
        record: RecordedRequest,
        status: int,
        code: str,
        message: str | None,
        retry_after: float | str | None,
        body: str | None,
    ) -> web.Response:
        """Answer an injected failure."""
        if body is None:
            return self._error(record, status, code, message or f"injected failure ({code})", retry_after)
        headers = {"Retry-After": _retry_after_header(retry_after)} if retry_after is not None else {}
        record.status = status
        return web.Response(status=status, text=body, content_type="text/html", headers=headers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        """Entry point for every request."""
        body = await request.read()
        record = RecordedRequest(
            index=self.request_count,
            time=time.time(),
            monotonic=self._clock(),
            method=request.method,
            path=request.path,
            query={k: request.query.getone(k) for k in request.query},
            query_string=request.query_string,
            headers=CIMultiDict(request.headers),
            body=body,
        )
        self.request_count += 1
        if self.history:
            self.requests.append(record)
        self._notify()
        try:
            response = await self._process(request, record)
        finally:
            record.completed_at = time.time()
            self._notify()
        if response is None:  # connection reset
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        return response

    async def _process(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse | None:
        """Apply faults, then the protocol. None means: drop the connection."""
        applied: list[str] = []
        delay = self._take_delay()
        if delay is not None:
            applied.append(f"delay({delay:g}s)")
            record.fault = "+".join(applied)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                record.fault += "+stopped"
                return None
            record.client_disconnected = request.transport is None or request.transport.is_closing()

        outage = self._outage
        if outage is not None and self._clock() >= outage.until:
            self._outage = outage = None
        if outage is not None:
            applied.append(f"fail_for({outage.status})")
            record.fault = "+".join(applied)
            return self._fail(
                record, outage.status, outage.code, outage.message, outage.retry_after, outage.body
            )

        fault = self._take_fault()
        if fault is not None:
            applied.append(fault.label())
            record.fault = "+".join(applied)
            if fault.kind == "reset":
                return None
            if fault.kind == "error_body":
                payload = {
                    "request_id": uuid.uuid4().hex,
                    "error": {
                        "code": fault.code,
                        "message": fault.message or "injected error in a 200 answer",
                    },
                }
                return self._respond(record, 200, payload)
            return self._fail(record, fault.status, fault.code, fault.message, fault.retry_after, fault.body)

        return self._protocol(request, record)

    def _protocol(self, request: web.Request, record: RecordedRequest) -> web.Response:
        """Normal handling, as the real API (but strict about limits)."""
        if request.path != PUSH_PATH:
            return self._violation(
                record, 404, "RouteNotFound", [f"route not found: {request.method} {request.path}"]
            )
        if request.method != "POST":
            return self._violation(
                record, 400, "MethodNotAllowed", [f"method {request.method} not allowed, use POST"]
            )

        keys = request.query.getall("integration_key", [])
        if self._over_limit(keys[0] if keys else ""):
            self.rate_limited += 1
            limits = f"{self.per_second}/s, {self.per_minute}/min"
            return self._error(
                record,
                429,
                "RequestTooFrequently",
                f"request too frequently, limits per integration are {limits}",
                self.rate_limit_retry_after,
            )

        if request.content_type != "application/json":
            return self._violation(
                record,
                400,
                "InvalidContentType",
                [f"Content-Type must be application/json, got {request.headers.get('Content-Type')!r}"],
            )

        if len(keys) > 1:
            return self._violation(
                record, 400, "InvalidParameter", [f"integration_key given {len(keys)} times in the query"]
            )
        if not keys or keys[0] != self.integration_key or self._key_rejected:
            return self._error(record, 400, "InvalidParameter", INVALID_KEY_MESSAGE)

        try:
            event = json.loads(
                record.body.decode("utf-8"),
                parse_constant=_reject_constant,
                object_pairs_hook=_no_duplicates,
            )
        except (UnicodeDecodeError, ValueError) as exc:
            return self._violation(record, 400, "InvalidParameter", [f"body is not valid JSON: {exc}"])
        problems = validate_event(event)
        if problems:
            return self._violation(record, 400, "InvalidParameter", problems)

        alert_key = event.get("alert_key") or uuid.uuid4().hex
        request_id = uuid.uuid4().hex
        received = time.time()
        self.accepted_count += 1
        if self.history:
            self.events.append(event)
            self.received_at.append(received)
        if self.on_event is not None:
            self.on_event(
                {"received_at": received, "request_id": request_id, "alert_key": alert_key, "event": event}
            )
        return self._respond(record, 200, {"request_id": request_id, "data": {"alert_key": alert_key}})


# --------------------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------------------


def _limit(value: str) -> int | None:
    """argparse type: a non-negative int, 0 meaning unlimited."""
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return number or None


async def _serve(args: argparse.Namespace) -> None:
    """Run the fake until SIGINT/SIGTERM, printing accepted events as JSON lines."""

    def emit(record: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    fake = FakeFlashduty(
        integration_key=args.key,
        port=args.port,
        per_second=args.per_second,
        per_minute=args.per_minute,
        history=args.history,
        on_event=emit,
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    async with fake:
        print(f"fake-flashduty listening on {fake.url}", file=sys.stderr, flush=True)
        await done.wait()
    print(
        f"fake-flashduty stopped: {fake.request_count} requests, {fake.accepted_count} accepted, "
        f"{fake.rate_limited} rate limited, {len(fake.violations)} violations",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: ``python -m tests.fake_flashduty --port N --key K``."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_flashduty", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    parser.add_argument("--key", default=DEFAULT_KEY, help="the accepted integration key")
    parser.add_argument("--per-second", type=_limit, default=100, help="rate limit per second (0: none)")
    parser.add_argument("--per-minute", type=_limit, default=1000, help="rate limit per minute (0: none)")
    parser.add_argument(
        "--history", action="store_true", help="keep every request in memory (default: counters only)"
    )
    args = parser.parse_args(argv)
    from agent.cli import run_async  # the agent's loop choice (uvloop): the fake must not be a bench's bottleneck

    run_async(_serve(args))


if __name__ == "__main__":
    main()
