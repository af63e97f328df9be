"""Experiment (not part of run.py): what would delivering from a separate process buy on the scan?

Section 1's delivery stress row (9,279 distinct alerts, one POST each) runs reading, matching and delivery in one
process, so they share one GIL. This prototype runs the unchanged ``OutputSender`` in a second process
against the same ``outbox.db`` (SQLite WAL allows it), while the agent itself queues events with its own
sender pointed at a closed port and backed off for an hour. It is a measurement, not a design: the child
polls the store every 5 ms instead of being woken, ignores the parent's reschedules, and reports nothing
back (no metrics, status or dead-letter accounting in the parent).

    .venv/bin/python bench/experiments/sender_process.py [RUNS]      # needs bench/out/scan-1024MiB.log

Prints, per run, the time from agent start to the last event at the fake endpoint, and each process's CPU.
Compare with section 1's stress row in bench/RESULTS.md (same file, rules, fake and pacing).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))


async def _child(state_dir: str, url: str) -> None:
    from agent.outbox import Outbox
    from agent.sender import OutputConfig, OutputSender

    outbox = Outbox(state_dir)
    await outbox.open()
    head = outbox.queue.head

    async def due_now(*args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
        rows = await head(*args, **kwargs)  # type: ignore[arg-type]
        for row in rows:
            row.next_attempt = 0.0  # the parent's refused first attempts were rescheduled an hour ahead
        return rows

    outbox.queue.head = due_now  # type: ignore[method-assign]
    sender = OutputSender(OutputConfig(push_url=url, max_per_second=100_000, max_per_minute=10_000_000,
                                       concurrency=32), outbox)

    async def poll() -> None:  # new rows come from another process: no in-process wake-up
        while True:
            await asyncio.sleep(0.005)
            sender._window.maybe_more = True
            sender.wake()

    poller = asyncio.create_task(poll())
    try:
        await sender.run()
    finally:
        poller.cancel()


def main(runs: int) -> None:
    from common import (
        PY,
        Fake,
        LineCounter,
        agent_config,
        cpu_seconds,
        free_port,
        fresh_dir,
        last_received_at,
        push_url,
        start_agent,
        warm,
    )
    from logdata import rules_yaml

    log = BENCH / "out" / "scan-1024MiB.log"
    meta = json.loads(log.with_suffix(".json").read_text())
    for _ in range(runs):
        wd = fresh_dir(BENCH / "out" / "sender-process")
        fake = Fake(free_port(), wd)
        fake.start()
        logs = f"logs:\n  - name: bench\n    paths: [{log}]\n    start_at: beginning\n    rules:\n{rules_yaml()}"
        cfg = wd / "config.yaml"
        hport = free_port()
        cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=free_port(),
                                    logs_yaml=logs, retry="  retry_initial: 1h\n  retry_max: 1h\n"))
        warm(log)
        with open(wd / "child.log", "wb") as out:
            child = subprocess.Popen([PY, __file__, "--child", str(wd / "state"), push_url(fake.port)],
                                     stdout=out, stderr=subprocess.STDOUT)
        agent = start_agent(cfg, hport, wd / "agent.log")
        counter = LineCounter(fake.out)
        deadline = time.monotonic() + 120
        while counter.poll() < meta["matches"] and time.monotonic() < deadline:
            time.sleep(0.02)
        got = counter.poll()
        seconds = last_received_at(fake.out) - agent.started
        print(f"{got:,} events in {seconds:.2f} s ({meta['lines'] / seconds:,.0f} lines/s); CPU s: agent "
              f"{cpu_seconds(agent.pid):.1f}, sender process {cpu_seconds(child.pid):.1f}, endpoint "
              f"{cpu_seconds(fake.proc.pid):.1f}", flush=True)
        counter.close()
        agent.stop()
        child.terminate()
        child.wait(30)
        fake.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        import uvloop

        while not os.path.exists(os.path.join(sys.argv[2], "outbox.db")):  # the agent creates it
            time.sleep(0.01)
        time.sleep(0.2)
        uvloop.run(_child(sys.argv[2], sys.argv[3]))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
