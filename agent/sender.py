"""Delivery to Flashduty: one worker per output, paced under the integration's limits, retrying forever
(up to the outbox's max_age) what may succeed later and dead-lettering what never will.

Ordering: events of one ``alert_key`` are sent strictly in commit order (an ``Ok`` never overtakes the
event it resolves); different keys go out concurrently. Failures back off per event and, for
output-wide trouble (transport errors, 429, 5xx), for the whole output, so a long outage costs one probe
per backoff step rather than a retry storm when it ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import json
import random
import sqlite3
import ssl
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent import __version__
from agent.lazy import lazy_import
from agent.logsetup import REDACTOR
from agent.outbox import Commit, Outbox, PendingEvent, QueuedEvent
from agent.units import Duration

log = structlog.get_logger(__name__)

# ~10 MiB of RSS: imported when the first event is sent (a dry run or an agent with nothing to say never does)
if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")

DEFAULT_BASE_URL = "https://api.flashcat.cloud/event/push/alert/standard"
RETRYABLE_STATUS = {408, 425, 429}
RETRYABLE_CODES = {"RequestTooFrequently", "InternalError"}


class OutputConfig(BaseModel):
    """One Flashduty integration (`flashduty:` or one item of a list of them)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "default"
    push_url: str = ""  # whole URL from the integration card; empty (and no key) -> dry run
    push_url_file: str | None = None  # file holding the push URL (readable only by the service user)
    integration_key: str = ""  # alternative to push_url: key plus base_url
    base_url: str = DEFAULT_BASE_URL
    max_per_second: int = Field(default=100, ge=1)
    max_per_minute: int = Field(default=1000, ge=1)
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout: Duration = 10.0
    retry_initial: Duration = 1.0
    retry_max: Duration = 60.0
    proxy: str | None = None
    ca_file: str | None = None
    verify_tls: bool = True

    @model_validator(mode="after")
    def _one_way_to_say_where(self) -> OutputConfig:
        given = [bool(self.push_url), bool(self.push_url_file), bool(self.integration_key)]
        if sum(given) > 1:
            raise ValueError("set only one of push_url, push_url_file, integration_key")
        if self.push_url:
            parts = urlsplit(self.push_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("push_url must be an http(s) URL copied from the integration card")
        return self

    def resolved_url(self) -> str:
        """The URL to POST to, or "" for dry run. Reads push_url_file on each call (reload picks up rotation)."""
        if self.push_url_file:
            return Path(self.push_url_file).read_text(encoding="utf-8").strip()
        if self.integration_key:
            parts = urlsplit(self.base_url)
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "integration_key"]
            query.append(("integration_key", self.integration_key))
            return urlunsplit(parts._replace(query=urlencode(query)))
        return self.push_url

    def secrets(self) -> list[str]:
        found = [self.integration_key] if self.integration_key else []
        with contextlib.suppress(OSError):
            url = self.resolved_url()
            found.extend(v for k, v in parse_qsl(urlsplit(url).query) if k == "integration_key")
        return [s for s in found if s]

    def dry_run(self) -> bool:
        return not (self.push_url or self.push_url_file or self.integration_key)


def resolve_proxy(url: str, configured: str | None) -> str | None:
    """The proxy for ``url``: the `proxy:` setting, else HTTPS_PROXY/HTTP_PROXY unless NO_PROXY matches."""
    if configured:
        return configured
    if not url:
        return None
    host = urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass_environment(host):
        return None
    return urllib.request.getproxies_environment().get(urlsplit(url).scheme)


def redact_url(url: str) -> str:
    return REDACTOR.text(url)


_JSON_HEADERS = {"Content-Type": "application/json"}


class SlidingWindowLimiter:
    """Exact sliding windows (e.g. 100/s and 1000/min) — a token bucket would let 1000 through in the
    first seconds and then overshoot the per-minute window the server counts in.

    A send counts as in flight from ``acquire()`` and is stamped when it completes (``done()``): the server
    counts the request at some moment in between, so windows measured from completions are conservative.
    One ordered deque per window keeps every check O(1) amortised, whatever the configured rate.
    """

    def __init__(self, limits: list[tuple[int, float]]) -> None:
        self._limits = [(count, window, collections.deque[float]()) for count, window in limits]
        self._in_flight = 0
        self._lock = asyncio.Lock()
        self._completed = asyncio.Event()

    def _wait_needed(self, now: float) -> float | None:
        """Seconds until a send may start; None when only an in-flight completion can free a slot."""
        wait = 0.0
        for count, window, stamps in self._limits:
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
            excess = len(stamps) + self._in_flight - count + 1  # sends that must leave the window first
            if excess <= 0:
                continue
            if excess > len(stamps):
                return None
            wait = max(wait, stamps[excess - 1] + window - now)
        return wait

    async def acquire(self) -> None:
        """Wait for a slot; call ``done()`` exactly once when the request completes."""
        async with self._lock:
            while True:
                wait = self._wait_needed(time.monotonic())
                if wait is None:
                    self._completed.clear()
                    await self._completed.wait()
                elif wait > 0:
                    await asyncio.sleep(wait + 0.001)
                else:
                    self._in_flight += 1
                    return

    def done(self) -> None:
        now = time.monotonic()
        self._in_flight -= 1
        for _count, _window, stamps in self._limits:
            stamps.append(now)
        self._completed.set()


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


@dataclass(slots=True)
class OutputStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str = ""
    backoff_until: float = 0.0
    latencies: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=256))


class OutputSender:
    """Delivers one output's queue. ``run()`` until cancelled; ``drain(timeout)`` for graceful shutdown."""

    WINDOW = 256  # how far past blocked keys the sender looks for sendable events
    UNRECORDED_WHILE_DISK_FULL = 1000

    def __init__(self, config: OutputConfig, outbox: Outbox, *, stdout: TextIO | None = None,
                 metrics: Any = None) -> None:
        self.config = config
        self.outbox = outbox
        self.stats = OutputStats()
        self.metrics = metrics
        self._stdout = stdout or sys.stdout
        self._wake = asyncio.Event()
        self._wake.set()
        self._in_flight: dict[int, str] = {}  # event id -> alert_key
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._limiter = SlidingWindowLimiter([(config.max_per_second, 1.0), (config.max_per_minute, 60.0)])
        self._failures = 0  # consecutive output-wide failures
        self._stopping = False
        self._url = "" if config.dry_run() else config.resolved_url()
        self._proxy: str | None = None
        # In-memory copy of the queue's head, so a busy sender does not re-read SQLite per event.
        self._window: dict[int, PendingEvent] = {}
        self._fetched_upto = 0  # highest event id loaded into the window
        self._maybe_more = True  # the store may hold rows beyond the window
        # Delivered ids whose delete is not yet committed: deleted in batches (one transaction, one thread
        # hop for many events). A crash before the delete re-sends them in id order, so per-key order holds.
        self._acked: list[int] = []
        self._acked_pending: set[int] = set()
        self._ack_task: asyncio.Task[None] | None = None
        # Keys with an attempt that timed out or was cut off after sending: the server may still process it
        # later, after newer events of the key. Once the key is quiet and that attempt could have landed,
        # the key's latest delivered event is queued again (identical events are discarded server-side).
        self._uncertain_until: dict[str, float] = {}
        self._latest_body: dict[str, str] = {}
        self._reasserts: dict[str, asyncio.Task[None]] = {}
        # label children resolved once (a labels() lookup per event showed in the drain profile); creating
        # them here also makes the series exist from the start at 0, so increase() sees the first event
        self._sent_counter = metrics.events_sent.labels(config.name) if metrics is not None else None
        self._latency_histogram = metrics.send_latency.labels(config.name) if metrics is not None else None
        outbox.queue.on_new_events(self._on_new_events)
        outbox.queue.on_rows_removed(self._forget_window)

    def _on_new_events(self) -> None:
        self._maybe_more = True
        self._wake.set()

    def _forget_window(self) -> None:
        """Rows vanished under us (drop_oldest, expiry): reload the head from the store."""
        self._window = {i: e for i, e in self._window.items() if i in self._in_flight}
        self._fetched_upto = max(self._window, default=0)
        self._maybe_more = True
        self._wake.set()

    def _ack(self, event_id: int) -> None:
        self._window.pop(event_id, None)
        self._acked.append(event_id)
        self._acked_pending.add(event_id)
        if self._ack_task is None or self._ack_task.done():
            self._ack_task = asyncio.create_task(self._flush_acks(), name=f"acks-{self.config.name}")

    async def _flush_acks(self) -> None:
        delay = 1.0
        while self._acked:
            ids, self._acked = self._acked, []
            try:
                await self.outbox.queue.delivered(ids)
            except sqlite3.Error as exc:
                # The store cannot record deliveries (disk full). Keep them pending — never re-send what
                # Flashduty accepted — and retry; the outbox reports disk_full meanwhile.
                self._acked = ids + self._acked
                log.warning("delivery_not_recorded_retrying", output=self.config.name, events=len(ids),
                            error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            self._acked_pending.difference_update(ids)
            self._wake.set()  # slots freed
            delay = 1.0

    async def _refill(self) -> None:
        if not self._maybe_more or len(self._window) >= self.WINDOW:
            return
        want = self.WINDOW - len(self._window)
        rows = await self.outbox.queue.head(self.config.name, want, after_id=self._fetched_upto)
        for row in rows:
            self._fetched_upto = row.id
            if row.id not in self._acked_pending:
                self._window[row.id] = row
        if len(rows) < want:
            self._maybe_more = False

    @property
    def dry_run(self) -> bool:
        return not self._url

    def refresh_url(self) -> None:
        """Re-read the push URL (a rotated ``push_url_file`` takes effect on reload/SIGHUP)."""
        if self.config.dry_run():
            return
        try:
            url = self.config.resolved_url()
        except OSError as exc:
            log.error("push_url_file_unreadable_keeping_previous", output=self.config.name, error=str(exc))
            return
        if url and url != self._url:
            self._url = url
            self._proxy = resolve_proxy(url, self.config.proxy)
            log.info("push_url_reloaded", output=self.config.name)

    def wake(self) -> None:
        self._wake.set()

    async def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ssl_ctx: ssl.SSLContext | bool = True
            if not self.config.verify_tls:
                ssl_ctx = False
            elif self.config.ca_file:
                ssl_ctx = ssl.create_default_context(cafile=self.config.ca_file)
            connector = aiohttp.TCPConnector(limit=self.config.concurrency, ssl=ssl_ctx)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                headers={"User-Agent": f"dutytail/{__version__}"},
                # trust_env would re-read proxy variables and ~/.netrc in a thread on every request
                # (10% of CPU in the backlog profile); the proxy is resolved once in _proxy instead.
                trust_env=False,
            )
            self._proxy = resolve_proxy(self._url, self.config.proxy)
        return self._session

    async def close(self) -> None:
        for task in self._reasserts.values():
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._ack_task is not None:
            await asyncio.shield(self._ack_task)  # commit the deletes of what was delivered
        if self._acked:
            await self._flush_acks()
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        while not self._stopping:
            # the 5 s bound notices rows another process queued (`dutytail dead-letters retry`)
            await self._sleep_or_wake(5.0)
            if not self._wake.is_set():
                self._maybe_more = True
            self._wake.clear()
            now = time.time()
            if self.stats.backoff_until > now:
                await self._sleep_or_wake(self.stats.backoff_until - now)
                self._wake.set()
                continue
            next_due = await self._dispatch(now)
            if next_due is not None and not self._wake.is_set():
                await self._sleep_or_wake(max(0.0, next_due - time.time()))
                self._wake.set()

    async def _sleep_or_wake(self, seconds: float) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands with the wake-up
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _dispatch(self, now: float) -> float | None:
        """Start sends for every head-of-key event that is due; return when the next retry falls due."""
        # Accepted-but-unrecorded deliveries count as in flight: after a crash those are re-sent, and the
        # README promises no more re-sends than the in-flight window. While the disk is full they cannot be
        # recorded at all; alerts matter most then, so up to UNRECORDED_WHILE_DISK_FULL may pile up.
        unrecorded = len(self._acked_pending)
        if self.outbox.stats.disk_full:
            unrecorded = max(0, unrecorded - self.UNRECORDED_WHILE_DISK_FULL)
        free = self.config.concurrency - len(self._in_flight) - unrecorded
        if free <= 0:
            return None
        await self._refill()
        blocked = set(self._in_flight.values())
        next_due: float | None = None
        for event in list(self._window.values()):
            if event.id in self._in_flight:
                continue
            if event.alert_key in blocked:
                continue
            blocked.add(event.alert_key)  # later events of this key wait for this one
            if event.next_attempt > now:
                next_due = event.next_attempt if next_due is None else min(next_due, event.next_attempt)
                continue
            self._in_flight[event.id] = event.alert_key
            self.stats.in_flight = len(self._in_flight)
            task = asyncio.create_task(self._deliver(event), name=f"send-{event.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            free -= 1
            if free <= 0:
                break
        return next_due

    async def _deliver(self, event: PendingEvent) -> None:
        try:
            if self.dry_run:
                self._stdout.write(event.body + "\n")
                self._stdout.flush()
                self._ack(event.id)
                self.stats.sent += 1
                self.stats.last_success = time.time()
                return
            await self._limiter.acquire()
            try:
                outcome = await self._post(event)
            finally:
                self._limiter.done()
            await self._record(event, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one event kill the worker; it stays queued
            log.exception("send_internal_error", output=self.config.name, event_id=event.id, error=str(exc))
            event.attempts += 1
            event.next_attempt = time.time() + 5.0
            with contextlib.suppress(sqlite3.Error):
                await self.outbox.queue.reschedule(event.id, event.attempts, event.next_attempt, f"internal: {exc}")
        finally:
            self._in_flight.pop(event.id, None)
            self.stats.in_flight = len(self._in_flight)
            self._wake.set()

    async def _post(self, event: PendingEvent) -> SendOutcome:
        session = self._session
        if session is None or session.closed:
            session = await self._ensure_session()
        started = time.monotonic()
        try:
            async with session.post(
                self._url,
                data=event.body.encode("utf-8"),
                headers=_JSON_HEADERS,
                proxy=self._proxy,
            ) as response:
                raw = await response.read()
                try:
                    body = orjson.loads(raw) if raw else None
                except ValueError:
                    body = None
                outcome = classify(response.status, body, response.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome = SendOutcome(False, True, None, "TransportError", REDACTOR.text(f"{type(exc).__name__}: {exc}"),
                                  maybe_delivered=not isinstance(exc, aiohttp.ClientConnectorError))
        elapsed = time.monotonic() - started
        self.stats.latencies.append(elapsed)
        if self._latency_histogram is not None:
            self._latency_histogram.observe(elapsed)
        return outcome

    async def _record(self, event: PendingEvent, outcome: SendOutcome) -> None:
        now = time.time()
        if outcome.ok:
            self._ack(event.id)
            if event.alert_key in self._uncertain_until:
                self._latest_body[event.alert_key] = event.body
                task = self._reasserts.get(event.alert_key)
                if task is None or task.done():
                    self._reasserts[event.alert_key] = asyncio.create_task(self._reassert(event.alert_key))
            self.stats.sent += 1
            self.stats.last_success = now
            self._failures = 0
            if self._sent_counter is not None:
                self._sent_counter.inc()
            return
        self.stats.failed += 1
        self.stats.last_failure = now
        self.stats.last_error = f"{outcome.status or '-'} {outcome.code}: {outcome.message}".strip()
        if self.metrics is not None:
            self.metrics.events_failed.labels(self.config.name, "retryable" if outcome.retryable else "permanent").inc()
        fields = {"output": self.config.name, "alert_key": event.alert_key, "status": outcome.status,
                  "code": outcome.code, "message": outcome.message, "request_id": outcome.request_id}
        if not outcome.retryable:
            try:
                await self.outbox.dead_letters.add(event, status=outcome.status, error_code=outcome.code,
                                              message=outcome.message, request_id=outcome.request_id)
            except sqlite3.Error as exc:
                event.next_attempt = now + 30.0  # cannot move it aside now (disk full): try again later
                log.error("dead_letter_not_recorded", output=self.config.name, alert_key=event.alert_key,
                          error=str(exc))
                return
            self._window.pop(event.id, None)
            self.stats.dead_lettered += 1
            log.error("event_rejected_dead_lettered", **fields)
            return
        self.stats.retried += 1
        self._failures += 1
        if outcome.maybe_delivered:
            settle = now + 2 * self.config.timeout + 5.0
            self._uncertain_until[event.alert_key] = max(settle, self._uncertain_until.get(event.alert_key, 0.0))
        delay = backoff_delay(self._failures - 1, self.config.retry_initial, self.config.retry_max)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        # The whole output waits: transport errors, 429 and 5xx are about the integration, not this event.
        self.stats.backoff_until = max(self.stats.backoff_until, now + delay)
        event.attempts += 1
        event.next_attempt = now + delay
        with contextlib.suppress(sqlite3.Error):  # the in-memory schedule holds; the store catches up later
            await self.outbox.queue.reschedule(event.id, event.attempts, event.next_attempt, self.stats.last_error)
        log.warning("send_failed_will_retry", retry_in=round(delay, 3), attempt=event.attempts, **fields)

    async def _reassert(self, key: str) -> None:
        """Queue the key's latest delivered event again once an abandoned attempt can no longer overtake it."""
        while True:
            wait = self._uncertain_until.get(key, 0.0) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            busy = key in self._in_flight.values() or any(e.alert_key == key for e in self._window.values())
            if busy or await self.outbox.queue.has_pending(self.config.name, key):
                await asyncio.sleep(1.0)
                continue
            body = self._latest_body.pop(key, None)
            self._uncertain_until.pop(key, None)
            if body is not None:
                await self.outbox.writer.commit(Commit(events=[QueuedEvent(self.config.name, key, json.loads(body))]))
                log.info("event_resent_after_uncertain_delivery", output=self.config.name, alert_key=key)
            return

    async def drain(self, timeout: float) -> bool:
        """Keep sending until the queue is empty or ``timeout`` passes; what is left stays on disk."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.stats.depth <= 0 and not self._in_flight:
                return True
            if not self._in_flight and not self._window and not self._maybe_more and not self._acked_pending:
                return True
            self._wake.set()
            await asyncio.sleep(0.05)
        return False

    def status(self) -> dict[str, Any]:
        lat = sorted(self.stats.latencies)
        return {
            "name": self.config.name,
            "url": redact_url(self._url) if self._url else "(dry run: printing events to stdout)",
            "sent": self.stats.sent,
            "failed": self.stats.failed,
            "dead_lettered": self.stats.dead_lettered,
            "in_flight": self.stats.in_flight,
            "last_success": self.stats.last_success,
            "last_failure": self.stats.last_failure,
            "last_error": REDACTOR.text(self.stats.last_error),
            "backoff_remaining": max(0.0, round(self.stats.backoff_until - time.time(), 3)),
            "latency_p50": lat[len(lat) // 2] if lat else None,
        }


async def send_once(config: OutputConfig, body: dict[str, Any]) -> SendOutcome:
    """One POST without queueing or retries (`dutytail send-test`): report what the API said, plainly."""
    url = config.resolved_url()
    connector = aiohttp.TCPConnector(
        ssl=False if not config.verify_tls else (
            ssl.create_default_context(cafile=config.ca_file) if config.ca_file else True)
    )
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=config.timeout),
                                     trust_env=False) as session:
        try:
            async with session.post(url, json=body, proxy=resolve_proxy(url, config.proxy)) as response:
                raw = await response.read()
                try:
                    parsed = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                return classify(response.status, parsed, response.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendOutcome(False, True, None, "TransportError", REDACTOR.text(f"{type(exc).__name__}: {exc}"))
