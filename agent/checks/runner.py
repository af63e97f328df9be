"""One run of one check: dispatch to the command runner or a built-in probe, enforce the timeout, and turn
every failure into an ``UNKNOWN`` result so a broken check can never take the agent down."""

from __future__ import annotations

import asyncio
import time

from agent.checks import probes, probes_network, probes_system
from agent.checks.command import run_command
from agent.checks.config import CheckConfig
from agent.checks.result import CheckResult
from agent.logsetup import Redactor


async def execute(check: CheckConfig, gate: probes.ThreadGate, redactor: Redactor | None = None) -> CheckResult:
    """Run ``check`` once; ``gate`` is the check's own thread gate (kept by the scheduler across runs)."""
    started = time.monotonic()
    if check.command is not None:
        # The command runner enforces the timeout itself because it has to kill the process group.
        try:
            return await run_command(check.command, timeout=check.timeout, shell=check.shell, redactor=redactor)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # defensive: run_command reports failures as results, never raises
            summary = f"running the command failed: {type(exc).__name__}: {exc}"
            return CheckResult("UNKNOWN", summary, reason="exec_error", duration=time.monotonic() - started)
    try:
        async with asyncio.timeout(check.timeout):
            result = await _probe(check, gate)
    except TimeoutError:
        result = CheckResult("UNKNOWN", f"timed out after {check.timeout:g}s", reason="timeout")
    except probes.ProbeBusy:
        result = CheckResult(
            "UNKNOWN",
            "previous run is still blocked in a system call (hung filesystem?); not starting another one",
            reason="busy",
        )
    except probes.ProbeError as exc:
        result = CheckResult("UNKNOWN", str(exc), reason="probe_error")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a probe bug or an odd OS error must not kill the scheduler
        summary = f"{check.kind} probe failed: {type(exc).__name__}: {exc}"
        result = CheckResult("UNKNOWN", summary, reason="probe_error")
    return CheckResult(
        result.status,
        result.summary,
        result.long_output,
        result.perfdata,
        result.reason,
        time.monotonic() - started,
        result.exit_code,
        result.truncated,
    )


async def _probe(check: CheckConfig, gate: probes.ThreadGate) -> CheckResult:
    if check.disk is not None:
        return await probes_system.probe_disk(check.disk, gate)
    if check.tcp is not None:
        return await probes_network.probe_tcp(check.tcp)
    if check.http is not None:
        return await probes_network.probe_http(check.http)
    if check.process is not None:
        return await probes_system.probe_process(check.process, gate)
    if check.file_age is not None:
        return await probes_system.probe_file_age(check.file_age, gate)
    if check.systemd_unit is not None:
        return await probes_system.probe_systemd_unit(check.systemd_unit, check.timeout)
    if check.load is not None:
        return await probes_system.probe_load(check.load, gate)
    if check.memory is not None:
        return await probes_system.probe_memory(check.memory, gate)
    raise AssertionError(f"check {check.name!r} has no probe")  # pragma: no cover - the model forbids it


async def run_check_once(check: CheckConfig) -> CheckResult:
    """Run one check once, standalone (tests, ``dutytail check-run``); never raises except on cancellation."""
    return await execute(check, probes.ThreadGate())
