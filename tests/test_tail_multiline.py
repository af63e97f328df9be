"""Multiline records (agent/tail/multiline.py): flushed by the next start line, a timeout, max_lines, rotation
and shutdown; a crash mid-record re-reads the whole record."""

from __future__ import annotations

import os
from pathlib import Path

from agent.tail import MultilineConfig, TailConfig
from tests.tail_helpers import Harness, append, tail_config, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return tail_config(tmp_path, **{"name": "t", "rotate_wait": 0.2, **kw})


TRACE = [
    "2026-11-27 10:00:00 ERROR boom",
    "java.lang.IllegalStateException: bad",
    "\tat com.example.A.run(A.java:10)",
    "\tat com.example.B.run(B.java:20)",
]


def ml_cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return cfg(tmp_path, multiline={"start": r"^\d{4}-\d\d-\d\d ", "timeout": kw.pop("timeout", 0.3)}, **kw)


async def test_multiline_flush_on_next_start_and_timeout(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, [*TRACE, "2026-11-27 10:00:01 INFO fine"])
    h = Harness(ml_cfg(tmp_path, timeout=30))
    await h.start()
    await h.wait_lines(1)
    assert h.lines[0] == "\n".join(TRACE)
    assert h.batches[-1].data is None  # records hold newlines: no joined-bytes fast path
    await h.stop()  # shutdown flushes the pending "INFO fine" record via close()
    assert h.lines[1] == "2026-11-27 10:00:01 INFO fine"
    # Timeout flush, and the restart does not repeat anything.
    append(a, TRACE)
    await h.start(multiline=MultilineConfig(start=r"^\d{4}-", timeout=0.2))
    await h.wait_lines(3, timeout=5)
    await h.stop()
    assert h.lines[2] == "\n".join(TRACE)
    assert len(h.lines) == 3


async def test_multiline_crash_rebuilds_record(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, ["2026-11-27 first", *TRACE[:2]])
    h = Harness(ml_cfg(tmp_path, timeout=30))
    await h.start()
    await h.wait_lines(1)
    await h.stop(crash=True)  # the pending record (TRACE[:2]) is not lost: the checkpoint stayed before it
    append(a, [*TRACE[2:], "2026-11-27 last"])
    await h.start()
    await h.wait_lines(2)
    await h.stop()
    assert h.lines == ["2026-11-27 first", "\n".join(TRACE), "2026-11-27 last"]


async def test_multiline_max_lines(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, ["2026-11-27 start", *[f"  cont {i}" for i in range(7)], "2026-11-27 next"])
    h = Harness(cfg(tmp_path, multiline={"start": r"^2026", "max_lines": 3, "timeout": 30}))
    await h.start()
    await h.wait_lines(3)
    await h.stop()
    assert [rec.count("\n") + 1 for rec in h.lines] == [3, 3, 2, 1]


async def test_multiline_flushed_at_rotation(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, TRACE)
    h = Harness(ml_cfg(tmp_path, timeout=60, rotate_wait=0.1))
    await h.start()
    await wait_until(lambda: bool(h.tailer and h.tailer.status()["files"]), what="file tracked")
    os.rename(a, tmp_path / "a.log.1")  # rotated away (no longer matches *.log): finished, record flushed
    await h.wait_lines(1, timeout=5)
    await h.stop()
    assert h.lines == ["\n".join(TRACE)]
    assert h.finished and not h.committed
