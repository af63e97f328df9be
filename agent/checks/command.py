"""Running external commands under the Nagios plugin API, safely.

A misbehaving plugin must never hurt the agent: it runs in its own process group (so a timeout kills the
plugin *and* everything it spawned), its output is drained continuously but only the first
``OUTPUT_CAP`` bytes are kept (so a chatty child never blocks on a full pipe and never bloats memory),
and every way of failing to run (missing binary, no exec permission, death by signal, timeout) becomes an
``UNKNOWN`` result with a summary that says what happened instead of an exception.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import time
from collections.abc import Sequence

from agent.checks.result import EXIT_STATUS, CheckResult, parse_plugin_output
from agent.logsetup import Redactor

OUTPUT_CAP = 4096
"""Bytes of stdout (and, separately, stderr) kept per run; the rest is read and discarded."""

KILL_GRACE = 2.0
"""Seconds between SIGTERM and SIGKILL to the process group."""

_READ_CHUNK = 65536
_DRAIN_AFTER_EXIT = 1.0
"""How long to keep reading after the child was killed: a grandchild that left the process group may hold
the pipe open forever, and the agent must not wait for it."""


class _CappedReader:
    """Reads a stream to EOF, keeping at most ``cap`` bytes, so the writer never blocks."""

    def __init__(self, stream: asyncio.StreamReader, cap: int) -> None:
        self._stream = stream
        self._cap = cap
        self.data = bytearray()
        self.truncated = False

    async def run(self) -> None:
        while chunk := await self._stream.read(_READ_CHUNK):
            room = self._cap - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            if len(chunk) > max(room, 0):
                self.truncated = True

    def text(self) -> str:
        # An incremental decoder without `final` drops a multi-byte character cut in half by the cap
        # instead of turning it into a replacement character.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return decoder.decode(bytes(self.data), final=not self.truncated)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def terminate_group(proc: asyncio.subprocess.Process, grace: float = KILL_GRACE) -> None:
    """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds, and reap the child.

    The final SIGKILL goes to the group even when the leader exited on SIGTERM, so helpers that ignored
    SIGTERM (or were slower) do not outlive the check.
    """
    pgid = proc.pid  # start_new_session=True makes the child the leader of a group with its own pid
    _signal_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        pass
    _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


_PRIVATE_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "FLASHDUTY_PUSH_URL", "LISTEN_FDS", "LISTEN_PID")


def plugin_environment(redactor: Redactor | None = None) -> dict[str, str]:
    """The agent's environment minus what is ours alone: systemd's notify/watchdog sockets (a plugin
    writing to them could fake our readiness) and anything carrying a credential (``redactor``: the agent's,
    knowing the secrets of its config; any ``integration_key=`` value is one in any case)."""
    redactor = redactor if redactor is not None else Redactor()
    return {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV and redactor.text(v) == v}


async def _spawn(args: list[str], kill_grace: float, redactor: Redactor | None) -> asyncio.subprocess.Process:
    """Start the child in its own session; a cancellation that lands mid-spawn still kills its group.

    ``create_subprocess_exec`` can be cancelled after the fork (while it connects the pipes). asyncio then
    SIGKILLs only the child itself, so anything the child already started would be orphaned. Shielding the
    spawn and terminating the whole group on cancellation closes that window.
    """
    spawn = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=plugin_environment(redactor),
        )
    )
    try:
        return await asyncio.shield(spawn)
    except asyncio.CancelledError:
        await asyncio.shield(_reap_cancelled_spawn(spawn, kill_grace))
        raise


async def _reap_cancelled_spawn(spawn: asyncio.Future[asyncio.subprocess.Process], kill_grace: float) -> None:
    try:
        proc = await spawn
    except OSError:
        return  # it never started
    await terminate_group(proc, kill_grace)
    # Drain and close the pipes so the transport does not outlive the child.
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stream.read(), _DRAIN_AFTER_EXIT)


def _describe(argv: Sequence[str], shell: bool) -> str:
    return "/bin/sh -c" if shell else argv[0]


async def run_command(
    argv: Sequence[str] | str,
    *,
    timeout: float,  # not asyncio.timeout(): on expiry the process group must be killed, not just cancelled
    shell: bool = False,
    kill_grace: float = KILL_GRACE,
    output_cap: int = OUTPUT_CAP,
    redactor: Redactor | None = None,
) -> CheckResult:
    """Run one plugin and interpret its exit code and output; never raises except on cancellation.
    ``redactor`` keeps the agent's credentials out of the plugin's environment (see plugin_environment).

    On cancellation (agent shutdown, scheduler cancelled) the process group is terminated the same way
    as on timeout before ``CancelledError`` propagates, so no plugin outlives the agent.
    """
    args = ["/bin/sh", "-c", argv] if shell and isinstance(argv, str) else list(argv)
    started = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - started

    try:
        proc = await _spawn(args, kill_grace, redactor)
    except FileNotFoundError:
        return CheckResult("UNKNOWN", f"command not found: {args[0]}", reason="not_found", duration=elapsed())
    except PermissionError:
        return CheckResult(
            "UNKNOWN",
            f"command not executable (permission denied): {args[0]}",
            reason="not_executable",
            duration=elapsed(),
        )
    except OSError as exc:
        return CheckResult(
            "UNKNOWN",
            f"cannot start {args[0]}: {exc.strerror or exc}",
            reason="exec_error",
            duration=elapsed(),
        )

    assert proc.stdout is not None and proc.stderr is not None
    out = _CappedReader(proc.stdout, output_cap)
    err = _CappedReader(proc.stderr, output_cap)
    readers = [asyncio.create_task(out.run()), asyncio.create_task(err.run())]
    timed_out = False
    leader_code: int | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                await proc.wait()
                await asyncio.gather(*readers)
        except TimeoutError:
            timed_out = True
            leader_code = proc.returncode  # set if only a background child kept the pipes open
            await terminate_group(proc, kill_grace)
            # Whatever the child printed before it was killed is still useful in the alert.
            await asyncio.wait(readers, timeout=_DRAIN_AFTER_EXIT)
    except asyncio.CancelledError:
        await asyncio.shield(terminate_group(proc, kill_grace))
        raise
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        if proc.returncode is None:  # pragma: no cover - only when an unexpected exception escaped above
            _signal_group(proc.pid, signal.SIGKILL)

    duration = elapsed()
    stdout_text, stderr_text = out.text(), err.text()
    truncated = out.truncated or err.truncated
    # Plugins talk on stdout; stderr only stands in when stdout is empty (a crash message, "not found").
    text = stdout_text if stdout_text.strip() else stderr_text
    summary, long_output, perfdata = parse_plugin_output(text)
    if truncated:
        note = f"[output truncated to {output_cap} bytes]"
        long_output = f"{long_output}\n{note}" if long_output else note
    code = proc.returncode
    name = _describe(args, shell)

    if timed_out:
        what = f"timed out after {timeout:g}s"
        if leader_code is not None:
            what += f" (the command exited {leader_code}, but a process it started kept its output open)"
        return CheckResult(
            "UNKNOWN",
            what + (f": {summary}" if summary else ""),
            long_output,
            perfdata,
            "timeout",
            duration,
            code,
            truncated,
        )
    if code is not None and code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
        return CheckResult(
            "UNKNOWN",
            f"{name} killed by {signame}" + (f": {summary}" if summary else ""),
            long_output,
            perfdata,
            "signal",
            duration,
            code,
            truncated,
        )
    if code == 126:
        return CheckResult(
            "UNKNOWN",
            f"command not executable (exit 126): {summary or name}",
            long_output,
            perfdata,
            "not_executable",
            duration,
            code,
            truncated,
        )
    if code == 127:
        return CheckResult(
            "UNKNOWN",
            f"command not found (exit 127): {summary or name}",
            long_output,
            perfdata,
            "not_found",
            duration,
            code,
            truncated,
        )
    status = EXIT_STATUS.get(code) if code is not None else None
    if status is None:
        return CheckResult(
            "UNKNOWN",
            f"exit code {code} is outside the plugin range 0-3" + (f": {summary}" if summary else ""),
            long_output,
            perfdata,
            "bad_exit",
            duration,
            code,
            truncated,
        )
    return CheckResult(
        status, summary or f"(no output, exit {code})", long_output, perfdata, "", duration, code, truncated
    )
