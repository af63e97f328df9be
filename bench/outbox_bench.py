"""Section 5: outbox throughput: events/s durably committed through the outbox's ordered writer (group commit).

Each committer is a coroutine that loops ``await outbox.writer.commit(Commit(events=[...], checkpoints=[...]))``,
like a source pipeline does (one checkpoint per commit). ``commit`` returns only once the transaction holding
the change is committed, so events/s here are durable events/s (WAL; fsync per the mode).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, fresh_dir, log

sys.path.insert(0, str(ROOT))

from agent.events import Event
from agent.outbox import Commit, Outbox, OutboxConfig, QueuedEvent

_BODY = Event(
    title="db-timeout on web-1", status="Warning", alert_key="0123456789abcdef0123456789abcdef",
    description="2026-11-27T08:00:05Z ERROR query failed: timeout after 1200ms on orders\n\n1 matching line(s) "
                "from 2026-11-27T08:00:05Z to 2026-11-27T08:00:05Z in /var/log/app/app.log\n> 2026-11-27T08:00:05Z "
                "ERROR query failed: timeout after 1200ms on orders",
    labels={"host": "web-1", "source": "app", "rule": "db-timeout", "path": "/var/log/app/app.log", "db": "orders"},
    event_time=1795766405,
).to_body()
_STATE = json.dumps({"v": 1, "path": "/var/log/app/app.log", "dev": 2049, "ino": 123456, "fp": "ab" * 16,
                     "fpl": 256, "off": 123456789, "tail": "cd" * 32, "skip": False})

CASES = [  # (committers, events per commit, flush_interval or None for the default)
    (1, 1, None),
    (16, 1, None),
    (128, 1, None),
    (16, 100, None),
    (1, 1, 0.0),
    (16, 1, 0.0),
]


async def _case(path: Path, fsync: str, committers: int, per_commit: int, flush: float | None,
                seconds: float) -> dict[str, Any]:
    fresh_dir(path)
    cfg = OutboxConfig(fsync=fsync, max_bytes=64 << 30) if flush is None else \
        OutboxConfig(fsync=fsync, max_bytes=64 << 30, flush_interval=flush)
    ob = Outbox(path, cfg)
    await ob.open()
    done = 0
    commits = 0
    stop = time.monotonic() + seconds

    async def worker(k: int) -> None:
        nonlocal done, commits
        events = [QueuedEvent("default", f"key-{k}", _BODY) for _ in range(per_commit)]
        while time.monotonic() < stop:
            await ob.writer.commit(Commit(events=events, checkpoints=[("bench", f"w{k}", _STATE)]))
            done += per_commit
            commits += 1

    t0 = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(committers)))
    elapsed = time.monotonic() - t0
    await ob.close()
    return {"events_s": done / elapsed, "commits_s": commits / elapsed,
            "flush_interval": cfg.flush_interval}


def bench_outbox(workdir: Path, runs: int, seconds: float) -> dict[tuple[str, int, int, float | None], list[dict]]:
    out: dict[tuple[str, int, int, float | None], list[dict]] = {}
    for fsync in ("normal", "always"):
        for committers, per_commit, flush in CASES:
            key = (fsync, committers, per_commit, flush)
            out[key] = []
            for _ in range(runs):
                out[key].append(asyncio.run(_case(workdir / "outbox", fsync, committers, per_commit, flush,
                                                  seconds)))
            log(f"outbox fsync={fsync} committers={committers} x{per_commit} flush={flush}: "
                f"{[round(r['events_s']) for r in out[key]]} events/s")
    return out
