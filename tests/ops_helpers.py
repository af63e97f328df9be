"""Helpers for the tests that operate a real agent (tests/test_app_*.py, test_cli_status.py, test_secrets.py,
test_sender_push_url_file.py): config texts, a started agent, endpoint polling, metrics parsing, the CLI as a
real subprocess or in-process, and a real systemd notify socket.

Tests marked ``xfail(strict=True)`` demonstrate agent bugs (the reason says which); they turn into failures
(XPASS) once a fix lands, so the marker gets removed with the fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent import cli as dutytail_cli
from tests.conftest import ROOT, AgentProcess
from tests.fake_flashduty import FakeFlashduty

T = TypeVar("T")

DB_MATCH = r"timeout on (?P<db>\w+) id=(?P<id>\d+)"

# A valid edit must take effect "within about two seconds"; the slack covers a loaded CI machine.
RELOAD_DEADLINE = 3.5


def config_text(
    url: str | None = None,
    *,
    title: str = "v1 timeout on {db}",
    app_paths: str = '["./logs/app.log"]',
    extra_rules: str = "",
    extra_sources: str = "",
    flashduty: str | None = None,
    health_extra: str = "",
    labels: str = "{env: ops}",
) -> str:
    """A complete config: one `app` source with the `db-timeout` rule (one alert per `id`).

    ``extra_rules`` are appended to app's rules (indented 6), ``extra_sources`` to `logs:` (indented 2).
    Nothing is templated with str.format, so rule templates keep their single braces.
    """
    if flashduty is None:
        flashduty = f"  push_url: {url}\n" if url else ""
    return (
        "state_dir: ./state\n"
        f"labels: {labels}\n"
        "flashduty:\n"
        f"{flashduty}"
        "  retry_initial: 50ms\n"
        "  retry_max: 300ms\n"
        "health:\n"
        "  listen: 127.0.0.1:${DUTYTAIL_TEST_HEALTH_PORT}\n"
        f"{health_extra}"
        "alerts:\n"
        "  max_events_per_key_per_minute: 1000\n"
        "  max_events_per_minute: 100000\n"
        "logs:\n"
        "  - name: app\n"
        f"    paths: {app_paths}\n"
        "    start_at: beginning\n"
        "    rules:\n"
        "      - name: db-timeout\n"
        f"        match: '{DB_MATCH}'\n"
        "        identity: [id]\n"
        "        severity: Critical\n"
        f'        title: "{title}"\n'
        '        description: "{line}"\n'
        "        resolve: {after: 1h}\n"
        f"{extra_rules}"
        f"{extra_sources}"
    )


DISK_RULE = (
    "      - name: disk-full\n"
    "        contains: 'disk full'\n"
    "        severity: Warning\n"
    '        title: "disk full on {host}"\n'
    "        resolve: {after: 1h}\n"
)

AUDIT_SOURCE = (
    "  - name: audit\n"
    '    paths: ["./logs/audit.log"]\n'
    "    start_at: beginning\n"
    "    rules:\n"
    "      - name: denied\n"
    "        match: 'denied user=(?P<user>\\w+)'\n"
    "        identity: [user]\n"
    '        title: "access denied for {user}"\n'
    "        resolve: {after: 1h}\n"
)


def location_of(text: str, needle: str) -> tuple[int, int]:
    """1-based (line, column) of the first occurrence of ``needle`` in ``text``."""
    for number, line in enumerate(text.splitlines(), start=1):
        col = line.find(needle)
        if col >= 0:
            return number, col + 1
    raise AssertionError(f"{needle!r} not in config text")


def append(path: Path, *lines: str) -> None:
    with path.open("a") as f:
        f.write("".join(line + "\n" for line in lines))


# --- a running agent ---------------------------------------------------------------------------------------


def logs_dir(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp_path/logs`` with an empty ``app.log`` in it (what config_text's `app` source tails)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text("")
    return logs, app


async def started(agent_process: Any, config: str, **kw: Any) -> AgentProcess:
    """An agent process with ``config``, started, ready, and with its config watch armed."""
    agent: AgentProcess = agent_process(config, **kw)
    agent.start()
    await agent.wait_ready()
    await wait_config_watch_armed(agent)
    return agent


def titles(fake: FakeFlashduty) -> list[str]:
    """The titles of the events the fake Flashduty received, in order."""
    return [e["title_rule"] for e in fake.events]


async def outbox_empty(agent: AgentProcess) -> bool:
    """True when the agent's outbox holds no event (per /status)."""
    return (await status(agent))["outbox"]["depth"] == 0


# --- HTTP -----------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.text)


def http_get(url: str, token: str | None = None, timeout: float = 3.0) -> Response:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Response(r.status, r.read().decode(), dict(r.headers))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read().decode(), dict(exc.headers))


async def fetch(agent: AgentProcess, path: str, token: str | None = None) -> Response:
    """GET an agent endpoint off the event loop (the fake Flashduty shares the loop and must keep answering)."""
    return await asyncio.to_thread(http_get, agent.health_url + path, token)


async def status(agent: AgentProcess) -> dict[str, Any]:
    r = await fetch(agent, "/status")
    assert r.status == 200, r.text
    return dict(r.json())


async def metrics(agent: AgentProcess) -> str:
    r = await fetch(agent, "/metrics")
    assert r.status == 200, r.text
    return r.text


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")


def metric(text: str, name: str, **labels: str) -> float | None:
    """Value of the sample ``name`` whose labels include ``labels`` (None when there is no such sample)."""
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or m.group("name") != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group("labels") or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group("value"))
    return None


async def eventually(probe: Callable[[], Any], timeout: float = 10.0, what: str = "condition",
                     interval: float = 0.05) -> Any:
    """Call ``probe`` (a plain or an async function) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        result = probe()
        last = await result if asyncio.iscoroutine(result) else result
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


async def reloads(agent: AgentProcess, result: str = "applied") -> float:
    return metric(await metrics(agent), "dutytail_config_reloads_total", result=result) or 0.0


async def wait_reloaded(agent: AgentProcess, before: float, timeout: float = 3.0, result: str = "applied") -> float:
    """Wait until the agent counted another reload with ``result``; return how long it took."""
    started = time.monotonic()

    async def probe() -> bool:
        return await reloads(agent, result) > before

    await eventually(probe, timeout, f"a config reload with result {result!r}")
    return time.monotonic() - started


def log_records(agent: AgentProcess) -> list[dict[str, Any]]:
    out = []
    for line in agent.logs().splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def events_named(agent: AgentProcess, name: str) -> list[dict[str, Any]]:
    return [r for r in log_records(agent) if r.get("event") == name]


# --- the CLI ----------------------------------------------------------------------------------------------


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def dutytail_command() -> list[str]:
    script = Path(sys.executable).parent / "dutytail"
    return [str(script)] if script.exists() else [sys.executable, "-m", "agent"]


async def run_cli(agent: AgentProcess | Path, *args: str, timeout: float = 20.0) -> CliResult:
    """``dutytail ARGS`` as a real subprocess in the agent's directory and environment (or in a directory).

    Async on purpose: the fake Flashduty runs on this event loop and must answer `send-test` meanwhile.
    """
    if isinstance(agent, AgentProcess):
        cwd = agent.workdir
        env = {**agent.env, "DUTYTAIL_TEST_HEALTH_PORT": str(agent.health_port)}
    else:
        cwd, env = agent, dict(os.environ)
    proc = await asyncio.create_subprocess_exec(
        *dutytail_command(), *args, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


async def cli_in_process(agent: AgentProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                         *args: str) -> tuple[int, str]:
    """`dutytail ARGS -c config.yaml` in this process (in a thread: the fake must keep answering), as the agent's
    directory and environment would run it; cheaper than a subprocess where the command is not the subject."""
    monkeypatch.setenv("DUTYTAIL_TEST_HEALTH_PORT", str(agent.health_port))
    monkeypatch.chdir(agent.workdir)
    capsys.readouterr()
    code = await asyncio.to_thread(dutytail_cli.main, [*args, "-c", "config.yaml"])
    out, err = capsys.readouterr()
    return code, out + err


# --- systemd notify socket ----------------------------------------------------------------------------------


@dataclass
class Notification:
    at: float  # time.monotonic() when received
    fields: dict[str, str]


class NotifySocket:
    """A bound AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET, read on the event loop."""

    def __init__(self, path: Path) -> None:
        assert len(str(path).encode()) < 100, f"socket path too long for AF_UNIX: {path}"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[Notification] = []
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            text = data.decode()
            fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
            self.messages.append(Notification(time.monotonic(), fields))

    def with_key(self, key: str, value: str | None = None, since: int = 0) -> list[Notification]:
        return [m for m in self.messages[since:] if key in m.fields and (value is None or m.fields[key] == value)]

    def close(self) -> None:
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
        os.unlink(self.path)


# --- /proc introspection --------------------------------------------------------------------------------------


def inotify_watched_inodes(pid: int) -> set[int]:
    """Inodes the process watches with inotify (from /proc/PID/fdinfo)."""
    found: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return found
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:inotify":
                continue
            info = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            continue
        found.update(int(m, 16) for m in re.findall(r"^inotify wd:\S+ ino:([0-9a-f]+)", info, re.M))
    return found


async def wait_config_watch_armed(agent: AgentProcess, timeout: float = 10.0) -> None:
    """Wait until the agent's config watcher has an inotify watch on the config file's directory.

    READY (and /readyz) come before the watch task has run, so an edit made in between is never seen (a
    bug covered by its own test); tests about reloads wait for this first so they test one thing each.
    """
    assert agent.proc is not None
    directory = agent.config_path.resolve().parent.stat().st_ino
    pid = agent.proc.pid
    await eventually(lambda: directory in inotify_watched_inodes(pid), timeout, "the config watch to be armed")


def has_open_file(pid: int, name: str) -> bool:
    """True when the process holds a descriptor on a file whose path ends with ``name``."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd).endswith(name):
                return True
        except OSError:
            continue
    return False


# --- asyncio tasks ---------------------------------------------------------------------------------------------


async def cancel_and_wait(task: asyncio.Task[Any], attempts: int = 5) -> None:
    """Cancel ``task`` and wait for it, cancelling again if a cancel was swallowed (the sender can swallow one:
    see test_sender_task_stops_when_cancelled_during_a_wake_up); never waits forever."""
    for _ in range(attempts):
        if task.done():
            return
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    raise AssertionError(f"task {task.get_name()} ignored {attempts} cancellations")


def awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The chain of coroutines (and the final future) a suspended task is waiting in, outermost first."""
    names: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        names.append(getattr(coro, "__qualname__", type(coro).__name__))
        coro = getattr(coro, "cr_await", None)
    return names
