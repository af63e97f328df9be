"""The alert engine alone: CPU per new alert, per state persisted, per quiet-period resolve, and memory per
open alert. Prints a markdown table. Usage: ``.venv/bin/python bench/bench_alerts.py [N]``."""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc

from agent.alerts import AlertEngine, AlertsConfig
from agent.rules import RuleConfig

RULE = RuleConfig.model_validate({"name": "job-failed", "match": r"job (?P<id>\d+) failed", "identity": ["id"],
                                  "resolve": {"after": "1s"}})


def engine(n: int) -> AlertEngine:
    config = AlertsConfig(max_events_per_key_per_minute=1000, max_events_per_minute=10**9, max_open_alerts=n + 10)
    return AlertEngine(config, host="bench-host", global_labels={"env": "bench"}, default_output="default")


def timings(n: int) -> dict[str, float]:
    eng = engine(n)
    lines = [f"2026-11-27T08:00:00Z worker[77]: job {i} failed: exit status 1" for i in range(n)]
    now = time.time()
    t0 = time.perf_counter()
    for i, line in enumerate(lines):
        eng.on_match("jobs", RULE, "/var/log/jobs.log", line, {"id": str(i)}, now)
    t1 = time.perf_counter()
    eng.take_changes()
    t2 = time.perf_counter()
    eng.tick(now + 2)
    t3 = time.perf_counter()
    return {"new alert (on_match, event built)": (t1 - t0) / n, "state persisted (take_changes)": (t2 - t1) / n,
            "quiet resolve (tick, Ok built)": (t3 - t2) / n}


def bytes_per_alert(n: int) -> float:
    eng = engine(n)
    now = time.time()
    gc.collect()
    tracemalloc.start()
    for i in range(n):
        line = f"2026-11-27T08:00:00Z worker[77]: job {i} failed"
        eng.on_match("jobs", RULE, "/var/log/jobs.log", line, {"id": str(i)}, now)
    eng.take_changes()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used / n


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    runs = [timings(n) for _ in range(3)]
    print(f"Alert engine, {n:,} distinct alerts, 3 runs (min / median / max)\n")
    print("| step | µs per alert |\n|---|---:|")
    for key in runs[0]:
        values = sorted(r[key] * 1e6 for r in runs)
        print(f"| {key} | {values[0]:.1f} / {values[1]:.1f} / {values[2]:.1f} |")
    print(f"\nMemory per open alert (tracemalloc, after take_changes): {bytes_per_alert(min(n, 20_000)):,.0f} bytes")


if __name__ == "__main__":
    main()
