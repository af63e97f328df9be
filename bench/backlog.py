"""Section 4: backlog. N events queue while the endpoint is down, then it comes back: drain rate, peak RSS,
nothing lost, per-key order kept.

How the backlog is made: a file of N/2 lines, each firing a distinct alert of a rule with
``resolve: {after: 1s}``, so every line yields its ``Warning`` and, a second later, its ``Ok``: N events with
N/2 distinct keys, while the agent's open-alert state stays small (the memory measured is the queue's, not
that of N open alerts). The push URL points at a port where nothing listens until the release.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    Fake,
    LineCounter,
    agent_config,
    free_port,
    fresh_dir,
    hwm_mib,
    log,
    read_fake_events,
    rss_mib,
    start_agent,
)

# flashduty.max_per_second for this section: 10x Flashduty's own per-integration limit (100/s), and within what
# one aiohttp client and the fake endpoint sustain together on a 2-core machine (see UNPACED)
RATE = 1000
UNPACED = 100_000  # the diagnostic run: pacing out of the way, to show the machine's ceiling
PYSPY = [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--nonblocking", "--threads", "--rate", "250",
         "--format", "raw"]


def _lines(path: Path, n: int) -> None:
    with open(path, "w") as fh:
        for start in range(0, n, 10000):
            fh.write("".join(f"2026-11-27T08:00:00Z worker[77]: job {i} failed: exit status 1\n"
                             for i in range(start, min(n, start + 10000))))


def _one(workdir: Path, events: int, timeout: float, drain_timeout: float,
         profile: Path | None = None, rate: int = RATE) -> dict[str, Any]:
    wd = fresh_dir(workdir)
    logdir = wd / "logs"
    logdir.mkdir()
    lines = events // 2
    _lines(logdir / "jobs.log", lines)
    port = free_port()  # nothing listens here until the release
    hport = free_port()
    logs = (f"logs:\n  - name: jobs\n    paths: [{logdir}/*.log]\n    start_at: beginning\n    rules:\n"
            f"      - name: job-failed\n        match: 'job (?P<id>\\d+) failed'\n        identity: [id]\n"
            f"        resolve: {{after: 1s}}\n")
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=port, logs_yaml=logs,
                                max_per_second=rate, max_per_minute=rate * 60, concurrency=64,
                                retry="  retry_initial: 200ms\n  retry_max: 1s\n"))
    agent = start_agent(cfg, hport, wd / "agent.log")
    fake = Fake(port, wd)
    peak_fill = peak_drain = 0.0
    try:
        agent.wait_ready()
        deadline = time.monotonic() + timeout
        depth = 0
        max_open = 0
        while depth < events:
            if time.monotonic() > deadline or not agent.alive():
                raise RuntimeError(f"backlog fill stalled at {depth}/{events}")
            peak_fill = max(peak_fill, rss_mib(agent.pid))
            health = agent.healthz()
            depth = health.get("outbox_depth", 0)
            max_open = max(max_open, health.get("open_alerts", 0) or 0)
            time.sleep(0.5)
        fill_s = time.time() - agent.started
        log(f"  {depth} events queued after {fill_s:.1f}s; releasing the endpoint")
        fake.start()
        t_release = time.time()
        counter = LineCounter(fake.out)
        deadline = time.monotonic() + drain_timeout
        spy = None
        if profile is not None:  # sample the sender while it drains (see profile_scan.profile_drain)
            spy = subprocess.Popen([*PYSPY, "--pid", str(agent.pid), "--duration", str(int(drain_timeout)),
                                    "--output", str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while counter.poll() < events:
            if time.monotonic() > deadline or not agent.alive():
                break
            peak_drain = max(peak_drain, rss_mib(agent.pid))
            time.sleep(0.2)
        counter.close()
        hwm = hwm_mib(agent.pid)
        if spy is not None:
            spy.wait(drain_timeout + 30)
    finally:
        agent.stop(60)
        fake.stop()
    got = read_fake_events(fake.out)
    left = _left_in_outbox(wd / "state" / "outbox.db")
    times = sorted(t for t, _, _ in got)
    by_key: dict[str, list[str]] = defaultdict(list)
    for _, key, status in sorted(got):
        by_key[key].append(status)
    delivered = {(k, s) for _, k, s in got}
    pairs = delivered | left
    out_of_order = sum(1 for seq in by_key.values() if seq and seq[0] == "Ok")
    n = len(times)
    lo, hi = (times[n // 10], times[(9 * n) // 10]) if n >= 10 else (float("nan"), float("nan"))
    return {
        "events": events,
        "received": n,
        "distinct_keys": len(by_key),
        "distinct_key_status": len(delivered),
        "left_in_outbox": len(left - delivered),
        "drained": len(delivered) == events,
        "lost": events - len(pairs),
        "duplicates": n - len(delivered),
        "out_of_order": out_of_order,
        "fill_s": fill_s,
        "first_after_release_s": (times[0] - t_release) if times else float("nan"),
        "drain_s": (times[-1] - t_release) if times else float("nan"),
        "drain_rate": n / (times[-1] - times[0]) if n > 1 else float("nan"),
        "steady_rate": 0.8 * n / (hi - lo) if n >= 10 and hi > lo else float("nan"),
        "peak_rss_fill": peak_fill,
        "max_open_alerts_fill": max_open,
        "peak_rss_drain": peak_drain,
        "hwm": hwm,
        "rate": rate,
    }


def _left_in_outbox(db_path: Path) -> set[tuple[str, str]]:
    """(alert_key, status) of the events still queued after the agent stopped (drain cut by the timeout)."""
    if not db_path.exists():
        return set()
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT alert_key, body FROM events").fetchall()
    finally:
        db.close()
    return {(k, json.loads(b)["event_status"]) for k, b in rows}


def bench_backlog(workdir: Path, runs: int, events: int, timeout: float,
                  drain_timeout: float) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        log(f"backlog run {i + 1}/{runs}: {events:,} events, max_per_second {RATE}")
        out.append(_one(workdir / "backlog", events, timeout, drain_timeout))
        log(f"  {out[-1]}")
    return out


def bench_unpaced(workdir: Path, events: int, timeout: float, drain_timeout: float) -> dict[str, Any]:
    """One run with pacing out of the way: the drain rate this machine allows (client + fake on 2 cores)."""
    log(f"backlog diagnostic: {events:,} events, max_per_second {UNPACED} (unpaced)")
    res = _one(workdir / "backlog-unpaced", events, timeout, drain_timeout, rate=UNPACED)
    log(f"  {res}")
    return res
