"""Section 2: alert latency, from a line appended to a watched file until its event reaches the endpoint.

The endpoint is the test suite's FakeFlashduty running in this process (limits off) with an ``on_event``
callback; lines are written by this process at a steady rate with ``os.write`` on an O_APPEND descriptor,
each line a distinct alert. Both timestamps come from ``time.time()`` in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, agent_config, free_port, fresh_dir, log, start_agent
from logdata import RULES, _rare_line, rules_yaml

sys.path.insert(0, str(ROOT))

from tests.fake_flashduty import FakeFlashduty


async def _one(workdir: Path, count: int, rate: float, outbox: str) -> dict[str, Any]:
    wd = fresh_dir(workdir)
    logdir = wd / "logs"
    logdir.mkdir()
    target = logdir / "app.log"
    target.write_text("boot line\n")
    received: dict[tuple[str, str], float] = {}
    all_in = asyncio.Event()

    def on_event(rec: dict[str, Any]) -> None:
        labels = rec["event"].get("labels", {})
        received[(labels.get("rule", ""), labels.get("id", ""))] = rec["received_at"]
        if len(received) >= count:
            all_in.set()

    fake = FakeFlashduty(integration_key="bench-key-0123456789abcdef", per_second=None, per_minute=None,
                         history=False, on_event=on_event)
    await fake.start()
    hport = free_port()
    logs = f"logs:\n  - name: app\n    paths: [{logdir}/*.log]\n    start_at: end\n    rules:\n{rules_yaml()}"
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=fake.port, logs_yaml=logs,
                                max_per_second=1000, max_per_minute=60000, concurrency=4, outbox=outbox))
    agent = start_agent(cfg, hport, wd / "agent.log")
    written: dict[tuple[str, str], float] = {}
    try:
        await asyncio.to_thread(agent.wait_ready)
        await asyncio.sleep(1.0)  # let the inotify watches settle
        compiled = [(name, re.compile(p)) for name, p, _ in RULES]
        fd = os.open(target, os.O_WRONLY | os.O_APPEND)
        import random

        rnd = random.Random(5)
        start = time.monotonic()
        for n in range(count):
            line = _rare_line(rnd, n, 10_000_000 + n)
            name, rx = compiled[n % len(compiled)]
            m = rx.search(line)
            assert m is not None
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            written[(name, m.group("id"))] = time.time()
            os.write(fd, (line + "\n").encode())
        os.close(fd)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 15)
    finally:
        await asyncio.to_thread(agent.stop)
        await fake.stop()
    lat = [(received[k] - t) * 1000 for k, t in written.items() if k in received]
    return {"latencies_ms": lat, "lost": count - len(lat)}


def bench_latency(workdir: Path, runs: int, count: int, rate: float = 20.0) -> dict[str, list[dict[str, Any]]]:
    variants = {"default outbox settings": "max_bytes: 8GiB"}
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for i in range(runs):
        for label, outbox in variants.items():
            log(f"latency run {i + 1}/{runs}: {label}: {count} appends at {rate:g}/s")
            res = asyncio.run(_one(workdir / "latency", count, rate, outbox))
            out[label].append(res)
            lat = sorted(res["latencies_ms"])
            if lat:
                log(f"  p50 {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms, lost {res['lost']}")
    return out
