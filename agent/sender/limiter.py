"""Pacing under the integration's limits (100 requests/s and 1,000/min per Flashduty integration)."""

from __future__ import annotations

import asyncio
import collections
import time

from agent.sender.share import FleetShare


class SlidingWindowLimiter:
    """Exact sliding windows (e.g. 100/s and 1000/min) — a token bucket would let 1000 through in the
    first seconds and then overshoot the per-minute window the server counts in.

    A send counts as in flight from ``acquire()`` and is stamped when it completes (``done()``): the server
    counts the request at some moment in between, so windows measured from completions are conservative.
    One ordered deque per window keeps every check O(1) amortised, whatever the configured rate.
    With a ``FleetShare``, a send also waits for the budgets it sets after 429s (agents sharing the
    integration); an answer to a send in flight frees a slot either way (``done()``).
    """

    def __init__(self, limits: list[tuple[int, float]], share: FleetShare | None = None) -> None:
        self._limits = [(count, window, collections.deque[float]()) for count, window in limits]
        self._share = share  # what a fleet on the same integration leaves this output (after 429s)
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
        if self._share is not None:
            shared = self._share.wait_needed(now, self._in_flight)
            if shared is None:
                return None
            wait = max(wait, shared)
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
