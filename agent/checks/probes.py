"""Built-in probes: measurements the agent takes itself, without external plugins.

Each probe returns a ``CheckResult`` with Nagios semantics (status, one-line summary, perfdata), so the
rest of the pipeline treats them exactly like command checks. Blocking work (statvfs, psutil, glob, file
reads) runs in a worker thread through a ``ThreadGate``: a statvfs on a hung NFS mount can block for
hours and a thread cannot be cancelled, so the gate lets at most one such stuck thread exist per check
instead of piling up a new one every interval and starving the shared thread pool.

This module holds what every probe shares: the gate, the two ways a probe fails (``ProbeBusy``,
``ProbeError``, which ``runner.execute`` turns into ``UNKNOWN`` results) and threshold judgement. The
probes live by family, each with its own lazily imported library: ``probes_network`` (tcp, http with
the TLS certificate's expiry; aiohttp) and ``probes_system`` (disk, memory, load, process, systemd
unit, file age; psutil). ``runner`` dispatches a check to its probe.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from agent.checks.result import RawStatus

T = TypeVar("T")


class ProbeBusy(Exception):
    """The previous run's blocking call of this check has not returned yet."""


class ProbeError(Exception):
    """A probe could not take its measurement; the message is the summary shown to the user."""


class ThreadGate:
    """Runs blocking calls in a thread, refusing a new one while the previous one is still stuck."""

    def __init__(self) -> None:
        self._busy = False
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._busy

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._busy:
                raise ProbeBusy
            self._busy = True

        def work() -> T:
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy = False

        return await asyncio.to_thread(work)


def above(value: float, warning: float | None, critical: float | None) -> RawStatus:
    """Nagios-style judgement of a value against upper thresholds (reached counts as crossed)."""
    if critical is not None and value >= critical:
        return "CRITICAL"
    if warning is not None and value >= warning:
        return "WARNING"
    return "OK"
