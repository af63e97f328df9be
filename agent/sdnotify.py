"""The systemd notify protocol (``sd_notify(3)``), written by hand so the agent has no extra dependency.

The unit runs with ``Type=notify``: systemd only considers the agent started once it says ``READY=1``
(after config, outbox and sources are up), tracks reloads through ``RELOADING=1``/``READY=1``, and kills
and restarts it when the ``WATCHDOG=1`` pings stop. Each message is one datagram of ``KEY=value`` lines
sent to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``.

Notifying is a side channel: a missing socket (not started by systemd, ``systemd-run`` without
notify, tests) turns every call into a no-op, and a failing send is logged once and otherwise ignored,
so it can never take the agent down or block its event loop.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """Sends state changes to the service manager; a no-op when ``$NOTIFY_SOCKET`` is absent.

    The socket is opened once (lazily, on the first message) and reused; it is non-blocking, so a
    service manager that does not read its queue costs a dropped message, never a stalled loop.
    """

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._path = path
        # "@name" is a socket in the abstract namespace: the kernel wants a leading NUL byte instead.
        self._address: str | bytes | None = None
        if path.startswith("@"):
            self._address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self._address = path
        elif path:
            # sd_notify() also understands "vsock:" addresses (VMs); the agent never runs that way.
            log.warning("sdnotify_unsupported_socket", notify_socket=path)
        self.enabled: bool = self._address is not None
        self._sock: socket.socket | None = None
        self._failing = False  # log a failure once per outage, not once per watchdog ping

    def ready(self, status: str | None = None) -> None:
        """Startup (or a reload) is complete: systemd starts ordered units and ``systemctl`` returns."""
        self._send("READY=1", status)

    def reloading(self) -> None:
        """A reload started; ``READY=1`` ends it. The timestamp lets systemd tie the two together."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", None, f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown started: systemd shows "deactivating" instead of treating the exit as a crash."""
        self._send("STOPPING=1", None)

    def status(self, text: str) -> None:
        """Free-form one-line status shown by ``systemctl status``."""
        self._send(None, text)

    def watchdog(self) -> None:
        """Keep-alive ping; without one per ``WatchdogSec=`` systemd kills and restarts the agent."""
        self._send("WATCHDOG=1", None)

    def watchdog_interval(self) -> float | None:
        """How often to ping: half of ``$WATCHDOG_USEC`` (the margin ``sd_watchdog_enabled(3)`` advises).

        ``None`` when no watchdog is configured, when ``$WATCHDOG_PID`` names another process (the
        variable leaked into a child such as a check command), or when there is no socket to ping.
        """
        if not self.enabled:
            return None
        pid = os.environ.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return None
        try:
            usec = int(os.environ.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2_000_000

    def close(self) -> None:
        """Release the socket (tests, shutdown); a later message reopens it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, state: str | None, status: str | None, *extra: str) -> None:
        if self._address is None:
            return
        lines = [line for line in (state, *extra) if line]
        if status is not None:
            # A newline would start another assignment: STATUS= must stay one line.
            lines.append("STATUS=" + " ".join(status.splitlines()))
        payload = ("\n".join(lines) + "\n").encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "sdnotify_send_failed", notify_socket=self._path, message=lines[0], error=str(exc)
                )
            return
        if self._failing:
            self._failing = False
            log.info("sdnotify_send_recovered", notify_socket=self._path)


async def watchdog_loop(notifier: SystemdNotifier, interval: float) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` seconds until cancelled.

    It runs as a task on the agent's event loop on purpose: if the loop is wedged (a blocking call, a
    busy loop), the pings stop and systemd restarts the agent, which is the whole point of the watchdog.
    """
    if interval <= 0:
        raise ValueError(f"watchdog interval must be positive, got {interval}")
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
