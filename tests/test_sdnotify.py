"""The notify protocol against real AF_UNIX datagram sockets, the way systemd receives it."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agent.sdnotify import SystemdNotifier, watchdog_loop


class Receiver:
    """A bound SOCK_DGRAM socket standing in for the service manager's notify socket."""

    def __init__(self, address: str) -> None:
        self.address = address  # as systemd puts it into $NOTIFY_SOCKET ("@..." for abstract)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)

    def recv(self, timeout: float = 2.0) -> dict[str, str]:
        """One message as a dict; fails the test if nothing arrives within ``timeout``."""
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        assert data.endswith("\n")
        return dict(line.split("=", 1) for line in data.splitlines())

    def pending(self) -> list[dict[str, str]]:
        """Everything queued right now, without waiting."""
        self.sock.setblocking(False)
        out = []
        while True:
            try:
                data = self.sock.recv(4096).decode()
            except BlockingIOError:
                return out
            out.append(dict(line.split("=", 1) for line in data.splitlines()))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    if request.param == "path":
        address = str(tmp_path / "notify.sock")
    else:
        address = f"@dutytail-test-{secrets.token_hex(8)}"
    rx = Receiver(address)
    yield rx
    rx.close()


@pytest.fixture
def notifier(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Iterator[SystemdNotifier]:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.address)
    n = SystemdNotifier()
    yield n
    n.close()


def test_ready_with_status(notifier: SystemdNotifier, receiver: Receiver) -> None:
    assert notifier.enabled
    notifier.ready()
    assert receiver.recv() == {"READY": "1"}
    notifier.ready(status="tailing 3 files")
    assert receiver.recv() == {"READY": "1", "STATUS": "tailing 3 files"}


def test_reloading_carries_monotonic_timestamp(notifier: SystemdNotifier, receiver: Receiver) -> None:
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    msg = receiver.recv()
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    assert set(msg) == {"RELOADING", "MONOTONIC_USEC"}


def test_stopping_status_and_watchdog(notifier: SystemdNotifier, receiver: Receiver) -> None:
    notifier.stopping()
    assert receiver.recv() == {"STOPPING": "1"}
    notifier.watchdog()
    assert receiver.recv() == {"WATCHDOG": "1"}
    # A newline in the status must not smuggle in another assignment such as READY=1.
    notifier.status("flushing outbox\nREADY=1")
    assert receiver.recv() == {"STATUS": "flushing outbox READY=1"}


def test_explicit_socket_path_overrides_environment(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
    n = SystemdNotifier(receiver.address)
    try:
        n.ready()
        assert receiver.recv() == {"READY": "1"}
    finally:
        n.close()


async def test_watchdog_loop_pings_periodically(notifier: SystemdNotifier, receiver: Receiver) -> None:
    task = asyncio.create_task(watchdog_loop(notifier, 0.05))
    pings: list[dict[str, str]] = []
    try:
        deadline = time.monotonic() + 5.0
        while len(pings) < 2:
            assert time.monotonic() < deadline, f"only {len(pings)} watchdog pings within 5 s"
            await asyncio.sleep(0.01)
            pings.extend(receiver.pending())
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert all(p == {"WATCHDOG": "1"} for p in pings)


async def test_watchdog_loop_stops_when_event_loop_is_blocked(
    notifier: SystemdNotifier, receiver: Receiver
) -> None:
    """The reason the loop lives on the event loop: a wedged loop must stop the pings."""
    task = asyncio.create_task(watchdog_loop(notifier, 0.02))
    try:
        deadline = time.monotonic() + 5.0
        while not receiver.pending():
            assert time.monotonic() < deadline, "no first watchdog ping within 5 s"
            await asyncio.sleep(0.01)
        time.sleep(0.2)
        assert receiver.pending() == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_watchdog_loop_rejects_non_positive_interval(notifier: SystemdNotifier) -> None:
    with pytest.raises(ValueError):
        await watchdog_loop(notifier, 0)


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = SystemdNotifier()
    assert not n.enabled
    n.ready("x")
    n.reloading()
    n.stopping()
    n.status("x")
    n.watchdog()
    assert n.watchdog_interval() is None  # nothing to ping, so no watchdog task
    assert n._sock is None  # never even opened a socket


def test_unsupported_socket_kind_is_disabled() -> None:
    n = SystemdNotifier("vsock:2:1234")
    assert not n.enabled
    n.ready()


def test_send_to_vanished_socket_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    rx = Receiver(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    n = SystemdNotifier()
    try:
        n.ready()
        assert rx.recv() == {"READY": "1"}
        rx.close()
        path.unlink()
        with capture_logs() as logs:
            for _ in range(5):
                n.watchdog()
                n.stopping()
        failed = [e for e in logs if e["event"] == "sdnotify_send_failed"]
        assert len(failed) == 1, logs  # logged once, not once per ping
        assert failed[0]["log_level"] == "warning"

        # The socket comes back (systemd re-executed): messages flow again and the recovery is logged.
        rx = Receiver(str(path))
        with capture_logs() as logs:
            n.ready()
        assert rx.recv() == {"READY": "1"}
        assert [e["event"] for e in logs] == ["sdnotify_send_recovered"]
    finally:
        rx.close()
        n.close()


def test_full_receive_queue_does_not_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A service manager that stops reading must cost dropped messages, not a stalled event loop."""
    path = tmp_path / "notify.sock"
    rx = Receiver(str(path))
    n = SystemdNotifier(str(path))
    try:
        started = time.monotonic()
        with capture_logs() as logs:
            for _ in range(5000):  # far beyond net.unix.max_dgram_qlen (512 by default)
                n.watchdog()
        assert time.monotonic() - started < 5.0
        assert [e["event"] for e in logs] == ["sdnotify_send_failed"]  # EAGAIN, once
        assert "Resource temporarily unavailable" in logs[0]["error"]
        assert rx.pending()  # the early ones did arrive
    finally:
        rx.close()
        n.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "<self>"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_env(
    env: dict[str, str], expected: float | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(os.getpid()) if value == "<self>" else value)
    n = SystemdNotifier(str(tmp_path / "notify.sock"))
    assert n.watchdog_interval() == expected
