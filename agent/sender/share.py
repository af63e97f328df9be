"""Sharing one integration with agents this one knows nothing of: how much to send after a 429.

Each agent's ``SlidingWindowLimiter`` keeps it alone under the integration's limits (100 requests/s and
1,000/min, counted by Flashduty per integration); a fleet pushing to the same integration is not. When an
incident hits the whole fleet at once, every agent has a burst to send and the integration answers 429 to
whatever does not fit. Exponential backoff alone fails both ways: in the 1 s window agents burst back
together, and once the 60 s window is full they sleep for up to ``retry_max`` long after it has slid open
again (measured: 1.6-1.7x the ideal drain, see bench/RESULTS.md "Fleet").

``FleetShare`` paces this output by what the integration has been accepting *from it*:

* It keeps the times of its own accepted requests per window (answer times: later than the server's
  count, so conservative).
* A 429 cuts the budget of the window that is full to what was accepted from this output in it: for the
  1 s window half of that (multiplicative decrease: a large share gives up more, so a fleet converges on
  fair shares and an agent that got nothing finds room), for the 60 s window all of it. Over a fleet the
  budgets then add up to at most what the integration accepted, its limit, whatever the fleet's size, and
  each agent's next send waits until one of its own accepted requests leaves the window, which is when the
  integration frees that slot: the fleet is clocked by the integration's own acceptance pattern replayed,
  not by timers that fire together. While the minute is full, the fleet waits quietly.
* Which window is full: after a first refusal the next tries come a 1 s window apart (plus per-try
  jitter), so each answer is news. Accepted: the 1 s window was full. Refused ``CONFIRM`` more times over
  more than a window: the next longer one is; its cut replaces the 1 s cuts of that run (they were the
  minute's doing). Found full again within a window of the last verdict, the window is known to have
  room once what filled it then has left (``open_by``), whatever this output's own recent requests say.
* A success after a 60 s cut means that window has room again: the cut is lifted and the 1 s budget paces.
  The 1 s budget grows back by about ``GROWTH`` requests per second of successes (additive increase,
  faster the longer no 429 came, by a factor drawn per process), up to the configured limit, where it stops
  constraining: capacity left by agents that are done is taken up by those that are not.
* An answer to a request sent before a window's last cut does not cut it again: it is old news.
* Slow start: after a pause (idle, or refused) one request at a time until one is accepted.
* ``forget()`` when the output has nothing left to send: the next burst starts afresh.

With nothing of its own to clock on in the full window (``MIN_TO_CLOCK``), the share cannot pace it:
``wait_needed`` says 0 and the sender backs off with full jitter, capped at ``probe_cap``.
"""

from __future__ import annotations

import collections
import math
import random


class _Window:
    __slots__ = ("accepted", "cap", "cut_at", "full_at", "limit", "open_by", "seconds")

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.cap = float(limit)  # at the limit: not constraining (the plain limiter paces)
        self.cut_at = -math.inf
        self.full_at = -math.inf  # when refusals last said this window was full
        self.open_by = math.inf  # when what filled it has left it for sure (see rate_limited)
        # this output's accepted requests in the window (the limiter keeps them to ``limit`` per window)
        self.accepted: collections.deque[float] = collections.deque(maxlen=limit)

    def own(self, now: float) -> int:
        stamps = self.accepted
        while stamps and stamps[0] <= now - self.seconds:
            stamps.popleft()
        return len(stamps)


class FleetShare:
    """Per-output budgets per window, cut to this output's own acceptances on 429, grown back on success.

    Times are ``time.monotonic()`` seconds, passed in (the sender's, or a simulation's).
    """

    #: the shortest window's budget grows by GROWTH requests per window's worth of accepted requests (each
    #: one adds GROWTH / budget), faster the longer no 429 came (QUIET_DOUBLING: seconds per extra GROWTH)
    GROWTH = 0.5
    QUIET_DOUBLING = 5.0
    #: the shortest window's budget is cut to this fraction of what it had accepted (multiplicative decrease:
    #: agents holding a large share give up more, so a fleet converges to fair shares and an agent that got
    #: nothing finds room); a longer window's budget is cut to exactly what was accepted in it (its cut
    #: means "wait until your own requests leave the window": less would wait past its reopening)
    DECREASE = 0.5
    #: fewer of its own requests than this in a full longer window: too little to clock on (it waits for
    #: the first of them to leave, maybe a whole window, while others' slots free sooner): backoff instead
    MIN_TO_CLOCK = 4
    #: tries refused after a run of 429s began, each a shortest window apart, before a longer window is
    #: taken to be full (one can be bad luck in a busy second; a wrong verdict idles this output a window)
    CONFIRM = 2
    #: each of those tries waits up to this fraction of the shortest window more, drawn per try: agents
    #: refused at the same moment do not all try again at the same moment
    JITTER = 0.5
    #: a send waits while more are in flight than this fraction of the requests accepted in the shortest
    #: window: after a pause (idle, or refused) one request at a time, more as they are accepted (slow start)
    SLOW_START = 0.5
    #: the ceiling of the fallback backoff after 429s, as a fraction of the longest window: probing at
    #: least four times per window finds it open again within a quarter of it
    PROBE_FRACTION = 0.25

    def __init__(self, limits: list[tuple[int, float]], rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self._rng = rng
        self._jitter = 0.0
        self._windows = [_Window(count, seconds) for count, seconds in sorted(limits, key=lambda x: x[1])]
        self._shortest = self._windows[0]
        self._growth = self.GROWTH * rng.uniform(0.5, 1.5)  # per process: a fleet's agents do not grow in step
        self._refused_since: float | None = None  # first 429 of the current run of 429s
        self._probes = 0  # tries refused in that run after it began
        self._caps_before: list[float] = []
        self._quiet_since = -math.inf  # since when requests have been accepted without a 429

    @property
    def probe_cap(self) -> float:
        """The longest a fallback backoff after 429s should wait (seconds)."""
        return self._windows[-1].seconds * self.PROBE_FRACTION

    def budgets(self) -> dict[str, float | None]:
        """The budget per window, None where it does not constrain (``{"1s": 12.0, "60s": None}``)."""
        return {f"{w.seconds:g}s": (round(w.cap, 2) if w.cap < w.limit else None) for w in self._windows}

    def forget(self) -> None:
        """The output has nothing left to send: the budgets were about a burst that is over. The next
        burst starts from the plain limiter again (one request at a time until one is accepted)."""
        if self._refused_since is None and all(w.cap >= w.limit for w in self._windows):
            return
        for w in self._windows:
            w.cap, w.open_by, w.cut_at = float(w.limit), math.inf, -math.inf
        self._refused_since = None
        self._probes = 0

    def accepted(self, now: float) -> None:
        """The integration accepted a request (stamped when the answer came: conservative)."""
        if self._refused_since is not None:
            self._refused_since = None
            self._quiet_since = now
        for w in self._windows:
            w.own(now)
            w.accepted.append(now)
        short = self._shortest
        if short.cap < short.limit:
            quiet = max(0.0, now - self._quiet_since)
            step = self._growth * (1.0 + quiet / self.QUIET_DOUBLING) / max(1.0, short.cap)
            short.cap = min(float(short.limit), short.cap + step)
        for w in self._windows[1:]:
            # accepted after a longer window's cut: it has slid open again, and the shortest window's budget
            # paces from here (a new run of 429s longer than that window would find this one full again)
            w.cap = float(w.limit)

    def rate_limited(self, sent_at: float, now: float) -> None:
        """The integration answered 429 to a request sent at ``sent_at``: cut the window that is full."""
        self._quiet_since = now
        if self._refused_since is None:
            self._refused_since = now
            self._probes = 0
            self._caps_before = [w.cap for w in self._windows]
        elif sent_at >= self._refused_since:
            self._probes += 1  # a try sent after the run began (see wait_needed), refused too
        self._jitter = self._rng.uniform(0.0, self.JITTER * self._shortest.seconds)
        refused_for = now - self._refused_since
        full = 0
        if self._probes >= self.CONFIRM:
            while full + 1 < len(self._windows) and refused_for > self._windows[full].seconds:
                full += 1
        w = self._windows[full]
        if sent_at < w.cut_at:
            return  # sent before the last cut: what it says is already known
        own = w.own(now)
        if full and own < self.MIN_TO_CLOCK:
            return
        keep = own * self.DECREASE if w is self._shortest and len(self._windows) > 1 else own
        w.cap = min(w.cap, max(1.0, math.floor(keep)))
        w.cut_at = now
        if full:
            # Full again within a window of the last time: it may still hold what filled it then, all of
            # which has left by that time + the window, whatever this output's own (recent) requests say
            w.open_by = w.full_at + w.seconds if now < w.full_at + w.seconds else math.inf
            w.full_at = now
        for shorter, before in zip(self._windows[:full], self._caps_before, strict=False):
            shorter.cap = max(shorter.cap, before)  # its cuts in this run were the longer window's doing

    def wait_needed(self, now: float, in_flight: int) -> float | None:
        """Seconds until the budgets allow one more send (0: now); None when only an answer to a request in
        flight can tell."""
        short = self._shortest
        if in_flight > short.own(now) * self.SLOW_START:
            return None  # slow start (see SLOW_START): an answer in flight frees the next send
        wait = 0.0
        if self._refused_since is not None and len(self._windows) > 1:
            # refused since then: each next try waits for the shortest window to slide once more past the
            # first refusal, so that its answer tells which window is full (accepted: that one was)
            wait = self._refused_since + short.seconds * (1 + min(self._probes, self.CONFIRM)) + self._jitter - now
        for w in self._windows:
            if w.cap >= w.limit:
                continue
            if now >= w.open_by:
                w.cap, w.open_by = float(w.limit), math.inf
                continue
            own = w.own(now)
            excess = own + in_flight - int(w.cap) + 1  # own accepted requests that must leave the window first
            if excess <= 0:
                continue
            if excess > own:
                return None
            wait = max(wait, min(w.accepted[excess - 1] + w.seconds, w.open_by) - now)
        return max(0.0, wait)
