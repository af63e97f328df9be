"""Runs every configured check on its interval and reports observations to the alert layer.

Scheduling rules (documented in docs/checks.md):

* Jitter: each check's first run happens at a random offset in ``[0, min(interval, start_jitter))``
  (``start_jitter`` defaults to 10 s), so a host with many checks, or a fleet restarted together, does not
  run everything in the same second. Later runs keep a fixed cadence from that first run on the monotonic
  clock, so they neither drift nor bunch up after a stall: missed ticks are skipped, not replayed.
* No overlap: a tick that finds the previous run of the same check still going (including the alert
  layer's handling of its observation) is skipped and counted in ``skipped_overruns``.
* Cancellation (agent stop, reload) cancels the running checks; command checks terminate their process
  group before the cancellation completes, so no plugin outlives the scheduler.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.checks.config import CheckConfig, EffectiveStatus
from agent.checks.lifecycle import CheckLifecycle
from agent.checks.probes import ThreadGate
from agent.checks.result import CheckResult, template_fields
from agent.checks.runner import execute
from agent.logsetup import Redactor

log = structlog.get_logger(__name__)

DEFAULT_START_JITTER = 10.0


@dataclass(frozen=True, slots=True)
class CheckObservation:
    """One run as the alert layer sees it: after unknown mapping, hysteresis and flap detection."""

    check: str
    status: EffectiveStatus
    result: CheckResult
    fields: dict[str, str]
    changed: bool
    flapping: bool
    flapping_changed: bool
    flap_percent: float = 0.0


@dataclass
class _CheckState:
    config: CheckConfig
    lifecycle: CheckLifecycle
    gate: ThreadGate = field(default_factory=ThreadGate)
    task: asyncio.Task[None] | None = None
    last_result: CheckResult | None = None
    last_run: float | None = None  # wall clock, seconds since the epoch, when the last run finished
    runs: int = 0
    skipped_overruns: int = 0
    callback_errors: int = 0

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


def observe(check: CheckConfig, lifecycle: CheckLifecycle, result: CheckResult) -> CheckObservation:
    """Apply one result to a check's lifecycle and build the observation (pure apart from ``lifecycle``)."""
    step = lifecycle.observe(result.status)
    fields = {"check": check.name, "status": step.status, **template_fields(result)}
    fields["flapping"] = "true" if step.flapping else "false"
    fields["flap_percent"] = f"{step.flap_percent:.1f}"
    return CheckObservation(
        check=check.name,
        status=step.status,
        result=result,
        fields=fields,
        changed=step.changed,
        flapping=step.flapping,
        flapping_changed=step.flapping_changed,
        flap_percent=step.flap_percent,
    )


class CheckScheduler:
    """Owns one timer loop per check; ``run()`` until cancelled."""

    def __init__(
        self,
        checks: list[CheckConfig],
        on_observation: Callable[[CheckObservation], Awaitable[None]],
        *,
        initial_status: dict[str, str] | None = None,
        start_jitter: float = DEFAULT_START_JITTER,
        redactor: Redactor | None = None,
    ) -> None:
        """``initial_status`` maps check names to the effective status stored before a restart (unknown
        names and invalid statuses are ignored with a log line). ``start_jitter`` caps the random delay
        of each check's first run (0 runs every check immediately; tests use that)."""
        self._on_observation = on_observation
        self._redactor = redactor  # the agent's: its credentials never reach a plugin's environment
        self._start_jitter = max(0.0, start_jitter)
        restored = initial_status or {}
        self._states: dict[str, _CheckState] = {}
        for check in checks:
            if check.name in self._states:
                raise ValueError(f"duplicate check name {check.name!r}")
            status = restored.get(check.name)
            try:
                lifecycle = CheckLifecycle.from_config(check, status)
            except ValueError as exc:
                log.warning("check_initial_status_ignored", check=check.name, status=status, error=str(exc))
                lifecycle = CheckLifecycle.from_config(check)
            self._states[check.name] = _CheckState(check, lifecycle)
        for name in restored.keys() - self._states.keys():
            log.info("check_initial_status_unused", check=name, reason="no such check configured")

    async def run(self) -> None:
        """Run all checks until cancelled; on cancellation running checks are stopped and reaped first."""
        try:
            async with asyncio.TaskGroup() as group:
                for state in self._states.values():
                    group.create_task(self._loop(state), name=f"check-loop:{state.config.name}")
        finally:
            running = [s.task for s in self._states.values() if s.task is not None and not s.task.done()]
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _loop(self, state: _CheckState) -> None:
        interval = state.config.interval
        delay = random.uniform(0.0, min(interval, self._start_jitter)) if self._start_jitter > 0 else 0.0
        next_due = time.monotonic() + delay
        try:
            while True:
                wait = next_due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if state.running:
                    state.skipped_overruns += 1
                    log.warning(
                        "check_overrun_skipped",
                        check=state.config.name,
                        interval=interval,
                        skipped_overruns=state.skipped_overruns,
                    )
                else:
                    state.task = asyncio.create_task(self._run_one(state), name=f"check:{state.config.name}")
                next_due += interval
                now = time.monotonic()
                if next_due <= now:  # stalled (suspend, overloaded loop): skip the missed ticks
                    next_due += ((now - next_due) // interval + 1) * interval
        finally:
            if state.task is not None and not state.task.done():
                state.task.cancel()
                await asyncio.gather(state.task, return_exceptions=True)

    async def _run_one(self, state: _CheckState) -> None:
        try:
            await self._run_one_inner(state)
        except asyncio.CancelledError:
            raise
        except Exception:  # this task is nobody's child: an escaped error would vanish silently
            state.callback_errors += 1
            log.exception("check_run_failed", check=state.config.name)

    async def _run_one_inner(self, state: _CheckState) -> None:
        check = state.config
        result = await execute(check, state.gate, self._redactor)
        state.last_result = result
        state.last_run = time.time()
        state.runs += 1
        observation = observe(check, state.lifecycle, result)
        if observation.changed or observation.flapping_changed:
            log.info(
                "check_status_changed",
                check=check.name,
                status=observation.status,
                raw_status=result.status,
                reason=result.reason,
                summary=result.summary,
                flapping=observation.flapping,
            )
        try:
            await self._on_observation(observation)
        except asyncio.CancelledError:
            raise
        except Exception:
            state.callback_errors += 1
            log.exception("check_observation_handler_failed", check=check.name)

    def status(self) -> dict[str, dict[str, Any]]:
        """Per-check state for ``/status`` and ``dutytail status``."""
        out: dict[str, dict[str, Any]] = {}
        for name, state in self._states.items():
            result = state.last_result
            lifecycle = state.lifecycle
            out[name] = {
                "kind": state.config.kind,
                "interval": state.config.interval,
                "status": lifecycle.status,
                "raw_status": result.status if result else None,
                "summary": result.summary if result else None,
                "reason": result.reason if result else None,
                "last_run": state.last_run,
                "duration": result.duration if result else None,
                "running": state.running,
                "runs": state.runs,
                "skipped_overruns": state.skipped_overruns,
                "callback_errors": state.callback_errors,
                "flapping": lifecycle.flapping,
                "flap_percent": round(lifecycle.flap_percent, 1),
                "consecutive_failures": lifecycle.consecutive_failures,
                "consecutive_successes": lifecycle.consecutive_successes,
            }
        return out
