"""The agent's lifecycle as systemd sees it (agent/app/agent.py): sd_notify READY, RELOADING around a reload,
WATCHDOG pings and STOPPING, on a real notify socket.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines.
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path
from typing import Any

from agent import __version__
from tests.conftest import AgentProcess
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    RELOAD_DEADLINE,
    NotifySocket,
    config_text,
    eventually,
    fetch,
    logs_dir,
    wait_config_watch_armed,
)


async def test_sd_notify_ready_reloading_watchdog_stopping(tmp_path: Path, fake: FakeFlashduty,
                                                           agent_process: Any) -> None:
    logs_dir(tmp_path)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        agent: AgentProcess = agent_process(config_text(fake.url),
                                            env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"})
        agent.env.pop("WATCHDOG_PID", None)
        agent.start()
        (ready,) = await eventually(lambda: notify.with_key("READY", "1"), 30, "READY=1")
        assert ready.fields["STATUS"] == f"dutytail {__version__}: 1 sources, 0 checks"
        # systemd starts dependent units on READY=1: the endpoints must already answer
        assert (await fetch(agent, "/readyz")).status == 200

        await wait_config_watch_armed(agent)

        mark = len(notify.messages)
        edited_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        agent.write_config(config_text(fake.url, title="v2 timeout on {db}"))

        def reload_done() -> bool:
            states = [m for m in notify.messages[mark:] if "READY" in m.fields or "RELOADING" in m.fields]
            return len(states) >= 2

        await eventually(reload_done, RELOAD_DEADLINE, "RELOADING=1 then READY=1")
        reloading, done = [m for m in notify.messages[mark:] if "READY" in m.fields or "RELOADING" in m.fields][:2]
        assert reloading.fields.get("RELOADING") == "1" and done.fields.get("READY") == "1"
        stamp = int(reloading.fields["MONOTONIC_USEC"])  # CLOCK_MONOTONIC is shared by all processes
        assert edited_usec <= stamp <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000

        # WatchdogSec=1s: pings every 0.5 s from the event loop, also across the reload
        await eventually(lambda: len(notify.with_key("WATCHDOG", "1")) >= 3, 5, "three WATCHDOG=1 pings")
        mark = len(notify.messages)
        assert agent.proc is not None
        # Its exit is not asserted: after a reload the agent re-reads its config in a loop (see
        # test_reading_the_config_does_not_make_the_agent_reread_it) and a stop then can hang (see
        # test_sender_task_stops_when_cancelled_during_a_wake_up for the mechanism); the fixture kills it.
        agent.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: notify.with_key("STOPPING", "1", since=mark), 5, "STOPPING=1")

        pings = [m.at for m in notify.with_key("WATCHDOG", "1")]
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert max(gaps) < 1.0, f"a gap between watchdog pings reached WatchdogSec: {gaps}"
        assert len(notify.with_key("READY", "1")) == 2  # start and the reload, nothing else
    finally:
        notify.close()
