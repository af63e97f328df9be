"""The scheduler with real command checks: no overlap, observations, restored state, clean cancellation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.checks import CheckConfig, CheckLifecycle, CheckObservation, CheckResult, CheckScheduler
from agent.checks.scheduler import observe
from tests.checks_helpers import alive, script, wait_until


def make(name: str, command: list[str], **extra: object) -> CheckConfig:
    return CheckConfig.model_validate({"name": name, "command": command, **extra})


# script, alive and wait_until: tests/checks_helpers.py


class Recorder:
    def __init__(self) -> None:
        self.observations: list[CheckObservation] = []

    async def __call__(self, observation: CheckObservation) -> None:
        self.observations.append(observation)

    def of(self, check: str) -> list[CheckObservation]:
        return [o for o in self.observations if o.check == check]


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_overrunning_check_never_runs_twice_at_once(tmp_path: Path) -> None:
    # Each run takes ~0.4 s, the interval is 0.1 s: most ticks find the previous run still going.
    cmd = script(
        tmp_path,
        "slow.sh",
        f"cd {tmp_path}\n"
        "if ! mkdir lock 2>/dev/null; then echo overlap >> overlaps; fi\n"
        "echo run >> runs\n"
        "sleep 0.4\n"
        "rmdir lock\n"
        "echo 'slow OK'\n",
    )
    recorder = Recorder()
    scheduler = CheckScheduler([make("slow", [cmd], interval=0.1, timeout="5s")], recorder, start_jitter=0)
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: len(recorder.of("slow")) >= 3, what="three completed runs")
        status = scheduler.status()["slow"]
    finally:
        await stop(task)
    assert not (tmp_path / "overlaps").exists(), "two instances of the check ran at the same time"
    assert status["skipped_overruns"] >= 2
    assert status["runs"] >= 3 and status["raw_status"] == "OK" and status["summary"] == "slow OK"
    assert all(o.status == "Ok" and not o.changed for o in recorder.observations)


async def test_observations_follow_hysteresis_and_carry_fields(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("2")
    cmd = script(
        tmp_path,
        "flip.sh",
        f'code=$(cat {state})\necho "exit $code | value=$code;1;2;0;3"\nexit $code\n',
    )
    check = make("flip", [cmd], interval=0.05, failures_before_alert=2, successes_before_ok=2)
    recorder = Recorder()
    scheduler = CheckScheduler([check], recorder, start_jitter=0)
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: any(o.changed for o in recorder.observations), what="Critical transition")
        first_bad = recorder.observations[:2]
        state.write_text("0")
        await wait_until(lambda: recorder.observations[-1].status == "Ok", what="recovery")
        status = scheduler.status()["flip"]
    finally:
        await stop(task)

    # First CRITICAL result: still Ok (needs two). Second: Critical, changed.
    assert [(o.status, o.changed, o.result.status) for o in first_bad] == [
        ("Ok", False, "CRITICAL"),
        ("Critical", True, "CRITICAL"),
    ]
    changes = [o for o in recorder.observations if o.changed]
    assert [o.status for o in changes] == ["Critical", "Ok"]
    # Recovery needed two OK results in a row: the first OK observation was still Critical.
    first_ok = next(i for i, o in enumerate(recorder.observations) if o.result.status == "OK")
    assert recorder.observations[first_ok].status == "Critical"
    assert recorder.observations[first_ok + 1].status == "Ok" and recorder.observations[first_ok + 1].changed

    fields = changes[0].fields
    assert fields["check"] == "flip" and fields["status"] == "Critical" and fields["raw_status"] == "CRITICAL"
    assert fields["summary"] == "exit 2" and fields["perf_value"] == "2"
    assert fields["perfdata"] == "value=2;1;2;0;3" and fields["flapping"] == "false"
    assert float(fields["duration"]) >= 0
    assert status["status"] == "Ok" and status["consecutive_successes"] >= 2


async def test_restored_status_needs_no_new_failure_streak(tmp_path: Path) -> None:
    cmd = script(tmp_path, "down.sh", "echo 'still down'\nexit 2\n")
    check = make("db", [cmd], interval=60, failures_before_alert=5)
    recorder = Recorder()
    scheduler = CheckScheduler([check], recorder, initial_status={"db": "Critical", "gone": "Ok"}, start_jitter=0)
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: len(recorder.observations) >= 1, what="first observation")
    finally:
        await stop(task)
    first = recorder.observations[0]
    assert first.status == "Critical" and not first.changed


async def test_unknown_mapping_and_handler_errors_do_not_stop_the_check(tmp_path: Path) -> None:
    calls: list[CheckObservation] = []

    async def flaky_handler(observation: CheckObservation) -> None:
        calls.append(observation)
        if len(calls) == 1:
            raise RuntimeError("alert layer hiccup")

    check = make("missing", [str(tmp_path / "no-such-plugin")], interval=0.05, unknown_status="Critical")
    scheduler = CheckScheduler([check], flaky_handler, start_jitter=0)
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: len(calls) >= 2, what="a second observation after the handler failed")
        status = scheduler.status()["missing"]
    finally:
        await stop(task)
    assert calls[0].status == "Critical" and calls[0].result.reason == "not_found"
    assert calls[0].fields["reason"] == "not_found"
    assert status["callback_errors"] >= 1 and status["reason"] == "not_found"


async def test_cancelling_the_scheduler_kills_running_children(tmp_path: Path) -> None:
    cmd = script(tmp_path, "hang.sh", f"sleep 300 &\necho $! > {tmp_path}/child.pid\nwait\n")
    scheduler = CheckScheduler([make("hang", [cmd], interval=60, timeout="60s")], Recorder(), start_jitter=0)
    task = asyncio.create_task(scheduler.run())
    pidfile = tmp_path / "child.pid"
    try:
        await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="child pid file")
        assert scheduler.status()["hang"]["running"] is True
    finally:
        await stop(task)
    pid = int(pidfile.read_text())
    await wait_until(lambda: not alive(pid), what="child to be killed")
    assert scheduler.status()["hang"]["running"] is False


async def test_start_jitter_spreads_first_runs(tmp_path: Path) -> None:
    """First runs land within min(interval, start_jitter); with 20 checks they are not all at once."""
    log = tmp_path / "starts"
    cmd = script(tmp_path, "stamp.sh", f'echo "$1 $(date +%s.%N)" >> {log}\necho ok\n')
    checks = [make(f"c{i}", [cmd, f"c{i}"], interval=0.5) for i in range(20)]
    recorder = Recorder()
    scheduler = CheckScheduler(checks, recorder, start_jitter=0.3)
    started = time.time()
    task = asyncio.create_task(scheduler.run())
    try:
        await wait_until(lambda: len({o.check for o in recorder.observations}) == 20, what="every check ran")
    finally:
        await stop(task)
    firsts: dict[str, float] = {}
    for line in log.read_text().splitlines():
        name, stamp = line.split()
        firsts.setdefault(name, float(stamp))
    stamps = sorted(firsts.values())
    assert len(stamps) == 20
    assert stamps[0] - started < 0.3 + 0.5  # all first runs start inside the jitter window (plus spawn time)
    assert stamps[-1] - stamps[0] > 0.05  # spread out, not a thundering herd


def test_observe_reports_flapping_transitions() -> None:
    check = CheckConfig.model_validate({"name": "f", "memory": {"warning": 80}, "flapping": True})
    lifecycle = CheckLifecycle.from_config(check)
    results = [CheckResult("OK" if i % 2 == 0 else "CRITICAL", f"run {i}") for i in range(12)]
    observations = [observe(check, lifecycle, result) for result in results]
    started = [o for o in observations if o.flapping_changed]
    assert len(started) == 1 and started[0] is observations[10] and started[0].flapping
    assert started[0].fields["flapping"] == "true" and started[0].fields["flap_percent"] == "54.5"
    assert observations[9].fields["flap_percent"] == "49.5" and not observations[9].flapping
    # Flap detection does not freeze the effective status: the alert layer decides what to suppress.
    assert [o.status for o in observations[-2:]] == ["Ok", "Critical"]
