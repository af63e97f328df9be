"""Storm control: at most so many events per alert and in all per minute, and one alert that says so.

A log that suddenly matches on every line must not page anyone thousands of times, nor exhaust the
integration's rate limit for every other alert. Sends are counted in sliding one-minute windows, per
alert key and in all; an event over a cap is suppressed and counted by reason, and while anything was
suppressed in the last minute the "storm-control" alert stays open with the count. An ``Ok`` is never
held back (the alert would stay open forever on the other side), so it is neither checked nor counted.
"""

from __future__ import annotations

import bisect
import collections
from typing import NamedTuple

import structlog

from agent.alerts.config import AlertsConfig
from agent.alerts.lifecycle import Resolve
from agent.alerts.render import Renderer
from agent.alerts.state import AlertState, EngineStats
from agent.events import stable_alert_key

log = structlog.get_logger(__name__)

CAPACITY_LOG_INTERVAL = 60.0  # seconds between "too many open alerts" warnings

SUMMARY_NAME = "storm-control"
_CALM = Resolve("Storm control: nothing suppressed in the last minute")


class Summary(NamedTuple):
    """A storm-control event due now: it goes out unchecked by the caps it reports on."""

    state: AlertState  # the storm-control alert, created if it was closed
    description: str


class StormControl:
    """The send windows and the suppression count behind the storm-control alert."""

    def __init__(self, config: AlertsConfig, stats: EngineStats, host: str) -> None:
        self.config = config
        self._stats = stats
        self.key = stable_alert_key(host, "dutytail", SUMMARY_NAME)  # the storm-control alert's own key
        # a short list per key, not a deque: one per open alert, and a deque's 600 bytes added up in a backlog
        self._key_sends: dict[str, list[float]] = {}
        # sends in the last minute, counted per second: O(60) memory however high the caps are raised
        self._global_sends: collections.deque[list[int]] = collections.deque()  # [second, count]
        self._global_total = 0
        self._window: collections.deque[tuple[float, int]] = collections.deque()  # (time, suppressed)
        self._capacity_logged = 0.0  # when the last "too many open alerts" warning was logged
        self._capacity_unlogged = 0  # identities suppressed since then

    def over_capacity(self, key: str, rule: str, now: float) -> None:
        """A new identity while ``max_open_alerts`` are tracked: suppressed, counted, logged once a minute."""
        self.suppressed("max_open_alerts", now)
        self._capacity_unlogged += 1
        if now - self._capacity_logged >= CAPACITY_LOG_INTERVAL:
            log.warning("alert_capacity_reached_new_alerts_suppressed", max_open_alerts=self.config.max_open_alerts,
                        suppressed=self._capacity_unlogged, example_alert_key=key, rule=rule)
            self._capacity_logged = now
            self._capacity_unlogged = 0

    def allowed(self, key: str, now: float) -> str | None:
        """None when storm control lets an event for ``key`` through, else the reason it does not."""
        sends = self._key_sends.get(key, [])
        del sends[: bisect.bisect_right(sends, now - 60)]  # send times are in order
        while self._global_sends and self._global_sends[0][0] <= now - 60:
            self._global_total -= self._global_sends.popleft()[1]
        if len(sends) >= self.config.max_events_per_key_per_minute:
            return "per_key_rate"
        if self._global_total >= self.config.max_events_per_minute:
            return "global_rate"
        return None

    def sent(self, key: str, now: float) -> None:
        """Count a non-Ok event for ``key`` against both windows."""
        self._key_sends.setdefault(key, []).append(now)
        second = int(now)
        if self._global_sends and self._global_sends[-1][0] == second:
            self._global_sends[-1][1] += 1
        else:
            self._global_sends.append([second, 1])
        self._global_total += 1

    def forget(self, key: str) -> None:
        """``key`` resolved: its window goes with it."""
        self._key_sends.pop(key, None)

    def suppressed(self, reason: str, now: float) -> None:
        """Every suppressed event is counted by reason and feeds the storm-control summary."""
        self._stats.suppressed[reason] += 1
        self._window.append((now, 1))

    def summary(self, state: AlertState | None, now: float, renderer: Renderer,
                output: str) -> Summary | Resolve | None:
        """What the storm-control alert (``state``, None while closed) needs at ``now``: a summary when
        the suppressed count changed (at most one a minute), a resolve after a calm minute, or nothing."""
        while self._window and self._window[0][0] <= now - 60:
            self._window.popleft()
        suppressed = sum(n for _, n in self._window)
        if suppressed and (state is None or (now - state.last_notified >= 60 and state.count != suppressed)):
            if state is None:
                state = AlertState(key=self.key, kind="storm", source="dutytail", name=SUMMARY_NAME,
                                   output=output, severity="Warning", firing=True, first_seen=now)
            state.count = suppressed
            state.last_seen = now
            state.title = f"dutytail storm control on {renderer.host}: events suppressed"
            state.labels = renderer.labels(state, {"rule": SUMMARY_NAME})
            state.notified = True
            state.last_notified = now
            config = self.config
            return Summary(state, f"dutytail suppressed {suppressed} event(s) in the last minute on {renderer.host} "
                                  f"(caps: {config.max_events_per_key_per_minute}/min per alert, "
                                  f"{config.max_events_per_minute}/min in all, {config.max_open_alerts} open "
                                  f"alerts). See dutytail_events_suppressed_total.")
        if not suppressed and state is not None and now - state.last_seen >= 60:
            return _CALM
        return None
