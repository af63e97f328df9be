"""Delivery to Flashduty: one worker per output, paced under the integration's limits, retrying forever
(up to the outbox's max_age) what may succeed later and dead-lettering what never will.

Ordering: events of one ``alert_key`` are sent strictly in commit order (an ``Ok`` never overtakes the
event it resolves); different keys go out concurrently. Failures back off per event and, for
output-wide trouble (transport errors, 429, 5xx), for the whole output, so a long outage costs one probe
per backoff step rather than a retry storm when it ends.

429s are about the integration, which a fleet of agents may share: ``FleetShare`` (share.py) then paces
this output by what the integration has been accepting from it, so that agents that know nothing of each
other converge on the integration's limits instead of retrying in waves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from agent.logsetup import Redactor
from agent.outbox import Outbox, PendingEvent
from agent.sender.config import OutputConfig, resolve_proxy
from agent.sender.http import open_session, post_event
from agent.sender.limiter import SlidingWindowLimiter
from agent.sender.outcome import SendOutcome, backoff_delay
from agent.sender.reassert import UncertainDeliveries
from agent.sender.share import FleetShare
from agent.sender.window import SendWindow

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger(__name__)


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

    UNRECORDED_WHILE_DISK_FULL = 1000

    def __init__(self, config: OutputConfig, outbox: Outbox, *, stdout: TextIO | None = None,
                 metrics: Any = None, redactor: Redactor | None = None) -> None:
        self.config = config
        self.redactor = redactor if redactor is not None else Redactor(config.secrets())
        self.outbox = outbox
        self.stats = OutputStats()
        self.metrics = metrics
        self._stdout = stdout or sys.stdout
        self._wake = asyncio.Event()
        self._wake.set()
        self._in_flight: dict[int, str] = {}  # event id -> alert_key
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()  # seeded from the OS: each agent of a fleet jitters its own way
        limits = [(config.max_per_second, 1.0), (config.max_per_minute, 60.0)]
        self._share = FleetShare(limits, self._rng)
        self._limiter = SlidingWindowLimiter(limits, self._share)
        # consecutive output-wide failures; an answer to a send made before the last one does not count
        # (concurrent sends fail together: one piece of news, one backoff step)
        self._failures = 0
        self._last_failure = float("-inf")
        self._stopping = False
        self._url = "" if config.dry_run() else config.resolved_url()
        self._proxy: str | None = None
        self._window = SendWindow(outbox.queue, config.name, self._wake.set)
        self._uncertain = UncertainDeliveries(outbox, config.name, config.timeout, self._key_busy)
        # label children resolved once (a labels() lookup per event showed in the drain profile); creating
        # them here also makes the series exist from the start at 0, so increase() sees the first event
        self._sent_counter = metrics.events_sent.labels(config.name) if metrics is not None else None
        self._latency_histogram = metrics.send_latency.labels(config.name) if metrics is not None else None
        outbox.queue.on_new_events(self._on_new_events)
        outbox.queue.on_rows_removed(self._forget_window)

    def _on_new_events(self) -> None:
        self._window.maybe_more = True
        self._wake.set()

    def _forget_window(self) -> None:
        """Rows vanished under us (drop_oldest, expiry): reload the head from the store."""
        self._window.forget(self._in_flight)
        self._wake.set()

    def _key_busy(self, key: str) -> bool:
        return key in self._in_flight.values() or self._window.key_waiting(key)

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
            session = await open_session(self.config)
            if self._session is None or self._session.closed:  # another delivery may have opened one meanwhile
                self._session = session
                self._proxy = resolve_proxy(self._url, self.config.proxy)
            else:
                await session.close()
        return self._session

    async def close(self) -> None:
        self._uncertain.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._window.close()  # commit the deletes of what was delivered
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        while not self._stopping:
            # the 5 s bound notices rows another process queued (`dutytail dead-letters retry`)
            await self._sleep_or_wake(5.0)
            if not self._wake.is_set():
                self._window.maybe_more = True
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
        unrecorded = len(self._window.unrecorded)
        if self.outbox.stats.disk_full:
            unrecorded = max(0, unrecorded - self.UNRECORDED_WHILE_DISK_FULL)
        free = self.config.concurrency - len(self._in_flight) - unrecorded
        if free <= 0:
            return None
        await self._window.refill()
        if not self._window.events and not self._in_flight:
            self._share.forget()  # nothing left to send: what it learnt was about a burst that is over
        blocked = set(self._in_flight.values())
        next_due: float | None = None
        for event in list(self._window.events.values()):
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
                self._window.ack(event.id)
                self.stats.sent += 1
                self.stats.last_success = time.time()
                return
            await self._limiter.acquire()
            sent_at = time.monotonic()
            try:
                outcome = await self._post(event)
                self._learn(outcome, sent_at)  # before done() wakes the next send
            finally:
                self._limiter.done()
            await self._record(event, outcome, sent_at)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one event kill the worker; it stays queued
            log.exception("send_internal_error", output=self.config.name, event_id=event.id, error=str(exc))
            event.attempts += 1
            event.next_attempt = time.time() + 5.0
            with contextlib.suppress(sqlite3.Error):
                await self.outbox.queue.reschedule(event.id, event.attempts, event.next_attempt,
                                                   f"internal: {exc}")
        finally:
            self._in_flight.pop(event.id, None)
            self.stats.in_flight = len(self._in_flight)
            self._wake.set()

    async def _post(self, event: PendingEvent) -> SendOutcome:
        session = self._session
        if session is None or session.closed:
            session = await self._ensure_session()
        started = time.monotonic()
        outcome = await post_event(session, self._url, event.body, self._proxy, self.redactor)
        elapsed = time.monotonic() - started
        self.stats.latencies.append(elapsed)
        if self._latency_histogram is not None:
            self._latency_histogram.observe(elapsed)
        return outcome

    def _learn(self, outcome: SendOutcome, sent_at: float) -> None:
        """What the integration accepted from this output, and its 429s, pace the sends that follow."""
        if outcome.ok:
            self._share.accepted(time.monotonic())
        elif rate_limited(outcome):
            self._share.rate_limited(sent_at, time.monotonic())

    def _retry_delay(self, outcome: SendOutcome) -> tuple[float, bool]:
        """(seconds until this event is retried, whether the whole output waits that long)."""
        limited = rate_limited(outcome)
        if limited:
            hold = self._share.wait_needed(time.monotonic(), 0)
            if hold is None or hold > 0:
                # its own accepted requests pace the retries (FleetShare): no timer of its own, which a
                # fleet's agents would fire together, and no backoff past the window's reopening
                base, output_wide = 0.0, False
            else:  # nothing of its own to clock on: probe with full-jitter backoff, a few times per window
                base = backoff_delay(self._failures - 1, self.config.retry_initial,
                                     min(self.config.retry_max, self._share.probe_cap), self._rng)
                output_wide = True
        else:
            base = backoff_delay(self._failures - 1, self.config.retry_initial, self.config.retry_max, self._rng)
            output_wide = True
        if outcome.retry_after is not None:
            # the server said when; a fleet told the same moment spreads over a little of it
            spread = self._rng.uniform(0.0, min(1.0, 0.25 * outcome.retry_after))
            return max(base, outcome.retry_after + spread), True
        return base, output_wide

    async def _record(self, event: PendingEvent, outcome: SendOutcome, sent_at: float | None = None) -> None:
        now = time.time()
        if outcome.ok:
            self._window.ack(event.id)
            self._uncertain.delivered(event.alert_key, event.body)
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
            self._window.remove(event.id)
            self.stats.dead_lettered += 1
            log.error("event_rejected_dead_lettered", **fields)
            return
        self.stats.retried += 1
        mono = time.monotonic()
        if sent_at is None or sent_at >= self._last_failure:
            self._failures += 1
        self._last_failure = mono
        if outcome.maybe_delivered:
            self._uncertain.attempt_uncertain(event.alert_key, now)
        delay, output_wide = self._retry_delay(outcome)
        if output_wide:
            # The whole output waits: transport errors, 429 and 5xx are about the integration, not this event.
            self.stats.backoff_until = max(self.stats.backoff_until, now + delay)
        else:  # paced by the share from here; an earlier 429's backoff gives way
            self.stats.backoff_until = min(self.stats.backoff_until, now)
        event.attempts += 1
        event.next_attempt = now + delay
        with contextlib.suppress(sqlite3.Error):  # the in-memory schedule holds; the store catches up later
            await self.outbox.queue.reschedule(event.id, event.attempts, event.next_attempt, self.stats.last_error)
        log.warning("send_failed_will_retry", retry_in=round(delay, 3), attempt=event.attempts, **fields)

    async def drain(self, timeout: float) -> bool:
        """Keep sending until the queue is empty or ``timeout`` passes; what is left stays on disk."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.outbox.stats.depth <= 0 and not self._in_flight:
                return True
            if not self._in_flight and self._window.idle:
                return True
            self._wake.set()
            await asyncio.sleep(0.05)
        return False

    def status(self) -> dict[str, Any]:
        lat = sorted(self.stats.latencies)
        return {
            "name": self.config.name,
            "url": self.redactor.text(self._url) if self._url else "(dry run: printing events to stdout)",
            "sent": self.stats.sent,
            "failed": self.stats.failed,
            "dead_lettered": self.stats.dead_lettered,
            "in_flight": self.stats.in_flight,
            "last_success": self.stats.last_success,
            "last_failure": self.stats.last_failure,
            "last_error": self.redactor.text(self.stats.last_error),
            "backoff_remaining": max(0.0, round(self.stats.backoff_until - time.time(), 3)),
            "fleet_share": self._share.budgets(),  # budgets per window after 429s; None: not constraining
            "latency_p50": lat[len(lat) // 2] if lat else None,
        }


def rate_limited(outcome: SendOutcome) -> bool:
    """The integration said 429 / RequestTooFrequently (its limits are full), rather than failing."""
    return outcome.status == 429 or outcome.code == "RequestTooFrequently"
