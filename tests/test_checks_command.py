"""Command checks against real subprocesses and the real monitoring-plugins-basic binaries."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from agent.checks import CheckConfig, run_check_once
from agent.checks.command import OUTPUT_CAP, run_command
from tests.checks_helpers import alive, script, wait_until

PLUGINS = Path("/usr/lib/nagios/plugins")


def plugin(name: str) -> str:
    path = PLUGINS / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not installed (Debian package monitoring-plugins-basic)")
    return str(path)


def check(command: list[str] | str, **extra: object) -> CheckConfig:
    return CheckConfig.model_validate(
        {"name": "t", "command": command, "shell": isinstance(command, str), "timeout": "10s", **extra}
    )


# script, alive and wait_until: tests/checks_helpers.py


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


async def test_plugin_output_with_perfdata_and_long_output(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        "perf.sh",
        "echo 'QUEUE WARNING - 42 jobs waiting | jobs=42;40;80;0; '\"'\"'oldest job'\"'\"'=3.5s;;'\n"
        "echo 'queue a: 30'\n"
        "echo 'queue b: 12 | a=30 b=12'\n"
        "echo 'latency=0.25s;1;2'\n"
        "exit 1\n",
    )
    result = await run_check_once(check([cmd]))
    assert result.status == "WARNING" and result.reason == "" and result.exit_code == 1
    assert result.summary == "QUEUE WARNING - 42 jobs waiting"
    assert result.long_output == "queue a: 30\nqueue b: 12"
    assert [(p.label, p.value, p.uom) for p in result.perfdata] == [
        ("jobs", 42.0, ""),
        ("oldest job", 3.5, "s"),
        ("a", 30.0, ""),
        ("b", 12.0, ""),
        ("latency", 0.25, "s"),
    ]
    assert result.perfdata[0].warn == "40" and result.perfdata[0].crit == "80" and result.perfdata[0].min == 0


@pytest.mark.parametrize(("code", "status"), [(0, "OK"), (1, "WARNING"), (2, "CRITICAL"), (3, "UNKNOWN")])
async def test_exit_codes(code: int, status: str) -> None:
    result = await run_check_once(check(f"echo 'state {code}'; exit {code}"))
    assert (result.status, result.summary, result.reason) == (status, f"state {code}", "")


async def test_argument_list_never_goes_through_a_shell() -> None:
    result = await run_check_once(check(["echo", "$HOME; exit 2", "|", "x=1"]))
    assert result.status == "OK" and result.summary == "$HOME; exit 2"
    assert [(p.label, p.value) for p in result.perfdata] == [("x", 1.0)]


async def test_out_of_range_exit_code() -> None:
    result = await run_check_once(check("echo weird; exit 5"))
    assert result.status == "UNKNOWN" and result.reason == "bad_exit"
    assert "exit code 5" in result.summary and "weird" in result.summary


async def test_missing_binary_and_not_executable(tmp_path: Path) -> None:
    missing = await run_check_once(check([str(tmp_path / "nope")]))
    assert missing.status == "UNKNOWN" and missing.reason == "not_found"
    assert "command not found" in missing.summary and "nope" in missing.summary

    noexec = script(tmp_path, "noexec.sh", "echo never\n", executable=False)
    denied = await run_check_once(check([noexec]))
    assert denied.status == "UNKNOWN" and denied.reason == "not_executable"

    # The same failures reported by a shell are exit codes 126 and 127.
    via_shell_126 = await run_check_once(check(noexec))
    assert (via_shell_126.status, via_shell_126.reason, via_shell_126.exit_code) == (
        "UNKNOWN",
        "not_executable",
        126,
    )
    via_shell_127 = await run_check_once(check("no-such-command-dutytail"))
    assert (via_shell_127.status, via_shell_127.reason, via_shell_127.exit_code) == (
        "UNKNOWN",
        "not_found",
        127,
    )
    assert "not found" in via_shell_127.summary


async def test_death_by_signal(tmp_path: Path) -> None:
    cmd = script(tmp_path, "segv.sh", "echo 'about to crash'\nkill -SEGV $$\n")
    result = await run_check_once(check([cmd]))
    assert result.status == "UNKNOWN" and result.reason == "signal"
    assert "SIGSEGV" in result.summary and "about to crash" in result.summary


async def test_output_is_capped_and_child_never_blocks(tmp_path: Path) -> None:
    # 2 MiB is far beyond a pipe buffer: without draining, the child would block and hit the timeout.
    cmd = script(tmp_path, "chatty.sh", "echo 'first line | size=1B'\nhead -c 2097152 /dev/zero | tr '\\0' 'x'\n")
    result = await run_check_once(check([cmd], timeout="20s"))
    assert result.status == "OK" and result.reason == "" and result.truncated
    assert result.summary == "first line"
    assert len(result.long_output.encode()) <= OUTPUT_CAP + 100
    assert result.long_output.endswith(f"[output truncated to {OUTPUT_CAP} bytes]")


async def test_invalid_utf8_is_replaced() -> None:
    result = await run_check_once(check("printf 'caf\\351 ok\\n'"))
    assert result.status == "OK" and result.summary == "caf\ufffd ok"


async def test_stderr_stands_in_when_stdout_is_empty() -> None:
    result = await run_check_once(check("echo 'boom on stderr' >&2; exit 2"))
    assert result.status == "CRITICAL" and result.summary == "boom on stderr"


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        "hang.sh",
        f"echo $$ > {tmp_path}/leader.pid\nsleep 300 &\necho $! > {tmp_path}/child.pid\necho 'started'\nwait\n",
    )
    started = time.monotonic()
    result = await run_check_once(check([cmd], timeout="1s"))
    elapsed = time.monotonic() - started
    assert result.status == "UNKNOWN" and result.reason == "timeout"
    assert result.summary.startswith("timed out after 1s") and "started" in result.summary
    assert elapsed < 2.9  # SIGTERM was enough: the 2 s SIGKILL grace was not used up
    for name in ("leader.pid", "child.pid"):
        pid = read_pid(tmp_path / name)
        await wait_until(lambda pid=pid: not alive(pid), what=f"{name} {pid} to die")


async def test_background_child_holding_the_pipe_is_killed_at_timeout(tmp_path: Path) -> None:
    cmd = script(tmp_path, "leaky.sh", f"sleep 300 &\necho $! > {tmp_path}/child.pid\necho 'done'\nexit 0\n")
    result = await run_check_once(check([cmd], timeout="0.5s"))
    assert result.reason == "timeout" and "the command exited 0" in result.summary and "done" in result.summary
    pid = read_pid(tmp_path / "child.pid")
    await wait_until(lambda: not alive(pid), what="background child to die")


async def test_timeout_escalates_to_sigkill_for_term_ignoring_children(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        "stubborn.sh",
        f"trap '' TERM\necho $$ > {tmp_path}/leader.pid\nsleep 300 &\necho $! > {tmp_path}/child.pid\nwait\nwait\n",
    )
    started = time.monotonic()
    result = await run_command([cmd], timeout=1.0, kill_grace=0.5)
    assert result.reason == "timeout"
    # The leader ignored SIGTERM: only the SIGKILL after the grace ended it.
    assert time.monotonic() - started >= 1.5
    for name in ("leader.pid", "child.pid"):
        pid = read_pid(tmp_path / name)
        await wait_until(lambda pid=pid: not alive(pid), what=f"{name} {pid} to die")


async def test_cancellation_kills_the_process_group(tmp_path: Path) -> None:
    cmd = script(tmp_path, "hang.sh", f"sleep 300 &\necho $! > {tmp_path}/child.pid\nwait\n")
    task = asyncio.create_task(run_check_once(check([cmd], timeout="60s")))
    pidfile = tmp_path / "child.pid"
    await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="child pid file")
    pid = read_pid(pidfile)
    assert alive(pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not alive(pid), what="child to die after cancel")


def processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("yields", range(6))
async def test_cancellation_at_any_point_of_the_spawn_leaves_no_process(tmp_path: Path, yields: int) -> None:
    """Cancelled while asyncio is still connecting the pipes, the child's helpers must die too."""
    marker = f"300.{uuid.uuid4().int % 10**9}"
    cmd = script(tmp_path, "spawner.sh", f"sleep {marker} &\nwait\n")
    task = asyncio.create_task(run_command([cmd], timeout=60, kill_grace=0.5))
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: not processes_with(marker), what=f"no process running 'sleep {marker}'")


# --- the real monitoring-plugins-basic binaries --------------------------------------------------------


async def test_check_tcp_against_a_port_we_open_then_close() -> None:
    binary = plugin("check_tcp")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        up = await run_check_once(check([binary, "-H", "127.0.0.1", "-p", str(port), "-t", "5"]))
    finally:
        server.close()
    assert up.status == "OK" and up.exit_code == 0
    assert up.perfdata and up.perfdata[0].label == "time" and up.perfdata[0].uom == "s"

    down = await run_check_once(check([binary, "-H", "127.0.0.1", "-p", str(port), "-t", "5"]))
    assert down.status == "CRITICAL" and down.exit_code == 2
    assert "refused" in down.summary.lower()


async def test_check_disk(tmp_path: Path) -> None:
    binary = plugin("check_disk")
    ok = await run_check_once(check([binary, "-w", "1", "-c", "1", "-p", str(tmp_path)]))
    assert ok.status == "OK", ok
    assert ok.summary.startswith("DISK OK")
    assert len(ok.perfdata) == 1 and ok.perfdata[0].uom in ("B", "MB", "MiB")
    assert ok.perfdata[0].max is not None and ok.perfdata[0].max > 0

    critical = await run_check_once(check([binary, "-w", "100%", "-c", "100%", "-p", str(tmp_path)]))
    assert critical.status == "CRITICAL" and critical.summary.startswith("DISK CRITICAL")


async def test_check_procs_counts_a_process_we_start() -> None:
    binary = plugin("check_procs")
    marker = f"313.{uuid.uuid4().int % 10**9}"
    args = [binary, "-C", "sleep", "-a", marker, "-c", "1:1"]
    proc = await asyncio.create_subprocess_exec("sleep", marker)
    try:
        up = await run_check_once(check(args))
    finally:
        proc.kill()
        await proc.wait()
    assert up.status == "OK", up
    assert [(p.label, p.value) for p in up.perfdata] == [("procs", 1.0)]

    down = await run_check_once(check(args))
    assert down.status == "CRITICAL"
    assert [(p.label, p.value) for p in down.perfdata] == [("procs", 0.0)]


async def test_plugins_do_not_inherit_credentials_or_the_notify_socket(monkeypatch, tmp_path: Path) -> None:
    from agent.checks import CheckConfig, run_check_once
    from agent.logsetup import Redactor

    monkeypatch.setenv("FLASHDUTY_PUSH_URL", "https://x/push?integration_key=plugin-secret-key-123")
    monkeypatch.setenv("MY_OTHER_URL", "https://x/push?integration_key=plugin-secret-key-123")
    monkeypatch.setenv("HEALTH_TOKEN", "plugin-token-456")  # a secret of the agent's config, no key= in it
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("KEEP_ME", "yes")
    script = tmp_path / "env.sh"
    script.write_text("#!/bin/sh\necho \"env ok | n=1\"\nenv | grep -E 'KEEP|NOTIFY|FLASHDUTY|MY_OTHER|secret|token'\n")
    script.chmod(0o755)
    result = await run_check_once(CheckConfig(name="env", command=[str(script)]))
    assert "KEEP_ME=yes" in result.long_output
    for leaked in ("plugin-secret-key-123", "NOTIFY_SOCKET", "FLASHDUTY_PUSH_URL"):
        assert leaked not in result.long_output
    assert "plugin-token-456" in result.long_output  # not a secret this check was told about
    told = await run_command([str(script)], timeout=5, redactor=Redactor(["plugin-token-456"]))
    assert "KEEP_ME=yes" in told.long_output and "plugin-token-456" not in told.long_output
