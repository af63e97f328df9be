"""From raw results to a notifiable status: unknown mapping, hysteresis and flap detection.

Pure and clock-free on purpose: the only input is the sequence of raw statuses, so every rule here is
unit-testable with plain lists, and restarting the agent only needs the last effective status.

Rules:

* Unknown mapping: ``UNKNOWN`` (which also covers timeouts and failures to run) becomes
  ``unknown_status`` (default ``Warning``); OK/WARNING/CRITICAL become Ok/Warning/Critical.
* Hysteresis (Consul's ``failures_before_critical`` / ``success_before_passing``): while the effective
  status is Ok, it turns bad only after ``failures_before_alert`` consecutive non-Ok results (and then
  takes the latest one); while bad, it returns to Ok only after ``successes_before_ok`` consecutive Ok
  results. A change between bad statuses (Warning <-> Critical <-> Info) is immediate: the alert is
  already open, and its severity should be current.
* Flap detection (Nagios): keep the last 21 mapped statuses; each of the up to 20 transitions that is a
  state change adds a weight rising linearly from 0.80 (oldest) by 0.02 per step to 1.18 (newest);
  percent = weighted changes / 20 * 100. Flapping starts at percent >= high and stops at percent <= low.
  The history uses mapped statuses *before* hysteresis, so a check bouncing under the hysteresis
  threshold is still recognised as unstable.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agent.checks.config import CheckConfig, EffectiveStatus, FlappingConfig, UnknownStatus
from agent.checks.result import RawStatus

HISTORY = 21
_LOW_WEIGHT = 0.80
_WEIGHT_STEP = 0.02
_VALID: tuple[EffectiveStatus, ...] = ("Ok", "Warning", "Critical", "Info")


def flap_percent(history: list[str] | tuple[str, ...]) -> float:
    """Nagios percent state change of up to the last 21 statuses (oldest first).

    A short history (after a start) is weighted as the newest part of a full window, so the most recent
    changes always carry the highest weights; the divisor stays 20, which keeps the percentage low until
    enough results have been seen (as in Nagios).
    """
    window = list(history)[-HISTORY:]
    total = 0.0
    offset = (HISTORY - 1) - (len(window) - 1)  # weight index of the oldest transition in this window
    for i in range(1, len(window)):
        if window[i] != window[i - 1]:
            total += _LOW_WEIGHT + _WEIGHT_STEP * (offset + i - 1)
    return total / (HISTORY - 1) * 100.0


def map_status(raw: RawStatus, unknown_status: UnknownStatus) -> EffectiveStatus:
    """Raw Nagios status to a Flashduty event status."""
    if raw == "OK":
        return "Ok"
    if raw == "WARNING":
        return "Warning"
    if raw == "CRITICAL":
        return "Critical"
    return unknown_status


@dataclass(frozen=True, slots=True)
class Transition:
    """What one result did to the check's state."""

    status: EffectiveStatus
    previous: EffectiveStatus
    mapped: EffectiveStatus
    changed: bool
    flapping: bool
    flapping_changed: bool
    flap_percent: float


class CheckLifecycle:
    """Per-check state: effective status, consecutive counters and the flap history."""

    def __init__(
        self,
        *,
        failures_before_alert: int = 1,
        successes_before_ok: int = 1,
        unknown_status: UnknownStatus = "Warning",
        flapping: FlappingConfig | None = None,
        initial_status: str | None = None,
    ) -> None:
        """``initial_status`` is the effective status stored before a restart; a bad one counts as an
        already-met failure streak, so the check keeps alerting without ``failures_before_alert`` new
        failures and needs ``successes_before_ok`` Oks to recover, exactly as if the agent never stopped."""
        if failures_before_alert < 1 or successes_before_ok < 1:
            raise ValueError("failures_before_alert and successes_before_ok must be at least 1")
        self.failures_before_alert = failures_before_alert
        self.successes_before_ok = successes_before_ok
        self.unknown_status: UnknownStatus = unknown_status
        self.flapping_config = flapping or FlappingConfig(enabled=False)
        self.status: EffectiveStatus = "Ok"
        if initial_status is not None:
            for valid in _VALID:
                if initial_status == valid:
                    self.status = valid
                    break
            else:
                raise ValueError(f"initial status {initial_status!r} is not one of {', '.join(_VALID)}")
        self.consecutive_failures = failures_before_alert if self.status != "Ok" else 0
        self.consecutive_successes = 0
        self.flapping = False
        self.flap_percent = 0.0
        self._history: deque[EffectiveStatus] = deque(maxlen=HISTORY)

    @classmethod
    def from_config(cls, check: CheckConfig, initial_status: str | None = None) -> CheckLifecycle:
        return cls(
            failures_before_alert=check.failures_before_alert,
            successes_before_ok=check.successes_before_ok,
            unknown_status=check.unknown_status,
            flapping=check.flapping,
            initial_status=initial_status,
        )

    @property
    def history(self) -> tuple[EffectiveStatus, ...]:
        return tuple(self._history)

    def observe(self, raw: RawStatus) -> Transition:
        """Feed one raw result; returns the new effective status and what changed."""
        mapped = map_status(raw, self.unknown_status)
        previous = self.status
        if mapped == "Ok":
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if previous != "Ok" and self.consecutive_successes >= self.successes_before_ok:
                self.status = "Ok"
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            if previous != "Ok" or self.consecutive_failures >= self.failures_before_alert:
                self.status = mapped

        self._history.append(mapped)
        was_flapping = self.flapping
        self.flap_percent = flap_percent(tuple(self._history))
        if not self.flapping_config.enabled:
            self.flapping = False
        elif not self.flapping and self.flap_percent >= self.flapping_config.high:
            self.flapping = True
        elif self.flapping and self.flap_percent <= self.flapping_config.low:
            self.flapping = False

        return Transition(
            status=self.status,
            previous=previous,
            mapped=mapped,
            changed=self.status != previous,
            flapping=self.flapping,
            flapping_changed=self.flapping != was_flapping,
            flap_percent=self.flap_percent,
        )
