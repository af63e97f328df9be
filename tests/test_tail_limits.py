"""File source limits: descriptors, deleted files, symlinks, permissions, over-long lines, many files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from agent.tail import TailConfig
from tests.tail_helpers import Harness, append, fd_count, make_lines, report, wait_until

ROOT = Path(__file__).resolve().parent.parent


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    base: dict[str, object] = {
        "name": "lim",
        "paths": [str(tmp_path / "*.log")],
        "start_at": "beginning",
        "rotate_wait": 0.1,
        "poll_interval": 0.2,
    }
    base.update(kw)
    return TailConfig.model_validate(base)


# ------------------------------------------------------------------------------------------ descriptors


async def test_deleted_file_read_to_end_then_closed(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    lines = make_lines("D", 0, 5000)
    append(a, lines[:10])
    baseline = fd_count()
    h = Harness(cfg(tmp_path, read_chunk_bytes=4096), queue_size=2)
    h.gate.clear()
    tailer = await h.start()
    await wait_until(lambda: any(f["open"] for f in tailer.status()["files"]), what="file open")
    append(a, lines[10:])
    a.unlink()  # still open by us: the rest is read through the descriptor
    h.gate.set()
    await h.wait_lines(5000)
    await wait_until(lambda: not tailer.status()["files"], what="deleted file closed")
    await wait_until(lambda: bool(h.finished), what="finished batch committed")
    assert not h.committed, "finished=True makes the downstream forget the checkpoint"
    await h.stop()
    h.assert_exactly(lines, "deleted while open, reader lagging")
    await wait_until(lambda: fd_count() <= baseline, what="no leaked descriptors")


async def test_max_open_files_bounds_descriptors(tmp_path: Path) -> None:
    names = [f"f{i:03d}" for i in range(60)]
    for n in names:
        append(tmp_path / f"{n}.log", make_lines(n.upper(), 0, 20))
    baseline = fd_count()
    h = Harness(cfg(tmp_path, max_open_files=8))
    tailer = await h.start()
    await h.wait_lines(60 * 20)
    assert tailer.status()["open_files"] <= 8
    for n in names:  # every file changes again: closed ones are re-opened by path, by identity
        append(tmp_path / f"{n}.log", make_lines(n.upper(), 20, 5))
    await h.wait_lines(60 * 25)
    await h.stop()
    expected = [line for n in names for line in make_lines(n.upper(), 0, 25)]
    h.assert_exactly(expected, "60 files, max_open_files=8")
    # Our descriptors + the inotify fd and its wake-up pipe; a little slack for transient copy searches.
    assert h.max_fds - baseline <= 8 + 6, f"descriptor use {h.max_fds - baseline} above bound"
    await wait_until(lambda: fd_count() <= baseline, what="no leaked descriptors")


async def test_closed_idle_file_rotated_while_closed(tmp_path: Path) -> None:
    """A file closed to respect max_open_files and renamed meanwhile is found again by inode."""
    for n in ("a", "b", "c"):
        append(tmp_path / f"{n}.log", make_lines(n.upper(), 0, 5))
    h = Harness(cfg(tmp_path, max_open_files=1, poll_interval=0.1))
    await h.start()
    await h.wait_lines(15)
    append(tmp_path / "a.log", make_lines("A", 5, 5))
    os.rename(tmp_path / "a.log", tmp_path / "a.log.1")
    append(tmp_path / "a.log", make_lines("A2", 0, 5))
    await h.wait_lines(25)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(
        make_lines("A", 0, 10) + make_lines("A2", 0, 5) + make_lines("B", 0, 5) + make_lines("C", 0, 5),
        "renamed while its descriptor was closed (fd limit)",
    )


async def test_two_thousand_files(tmp_path: Path) -> None:
    for i in range(2000):
        (tmp_path / f"s{i:04d}.log").write_text(f"S{i:04d} 0\nS{i:04d} 1\n")
    baseline = fd_count()
    h = Harness(cfg(tmp_path, max_open_files=200), queue_size=64)
    tailer = await h.start()
    await h.wait_lines(4000, timeout=30)
    for i in range(0, 2000, 7):
        append(tmp_path / f"s{i:04d}.log", [f"S{i:04d} 2"])
    await h.wait_lines(4000 + len(range(0, 2000, 7)), timeout=30)
    status = tailer.status()
    assert status["open_files"] <= 200 and len(status["files"]) == 2000
    await h.stop()
    assert len(h.lines) == len(set(h.lines)) == 4000 + len(range(0, 2000, 7))
    assert h.max_fds - baseline <= 200 + 6
    report("2,000 files, max_open_files=200", 4000 + len(range(0, 2000, 7)), h.lines)


# --------------------------------------------------------------------------------------------- symlinks


async def test_symlink_retarget_and_dangling(tmp_path: Path) -> None:
    logs, targets = tmp_path / "logs", tmp_path / "targets"
    logs.mkdir()
    targets.mkdir()
    t1, t2, t3 = targets / "t1", targets / "t2", targets / "t3"
    append(t1, make_lines("T1", 0, 10))
    (logs / "current.log").symlink_to(t1)
    (logs / "broken.log").symlink_to(t3)  # dangling until t3 appears
    h = Harness(cfg(logs, rescan_interval=0.5))
    tailer = await h.start()
    await h.wait_lines(10)
    assert any("dangling symlink" in e["error"] for e in tailer.status()["errors"])
    append(t1, make_lines("T1", 10, 5))  # written through the target's directory: still picked up
    await h.wait_lines(15)
    append(t2, make_lines("T2", 0, 10))
    tmp_link = logs / ".current.tmp"
    tmp_link.symlink_to(t2)
    os.replace(tmp_link, logs / "current.log")  # ln -sfn: atomic retarget
    await h.wait_lines(25)
    append(t3, make_lines("T3", 0, 3))
    await h.wait_lines(28)
    await wait_until(lambda: not tailer.status()["errors"], what="dangling error cleared")
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(make_lines("T1", 0, 15) + make_lines("T2", 0, 10) + make_lines("T3", 0, 3), "symlinks")


# ------------------------------------------------------------------------------------------ permissions

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    sys.path.insert(0, {root!r})
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout carries the protocol
    from agent.tail import FileSource, TailConfig

    async def main():
        cfg = TailConfig(name="perm", paths=[{pattern!r}], start_at="beginning", poll_interval=0.1)
        tailer = FileSource(cfg, {{}}, is_first_start=True)
        queue = asyncio.Queue(maxsize=8)
        task = asyncio.create_task(tailer.run(queue))
        stop = {stop!r}
        while not os.path.exists(stop):
            try:
                batch = await asyncio.wait_for(queue.get(), 0.1)
                for line in batch.lines:
                    print(json.dumps({{"line": line}}), flush=True)
            except asyncio.TimeoutError:
                pass
            print(json.dumps({{"status": tailer.status()["errors"]}}), flush=True)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tailer.close(None)

    asyncio.run(main())
    """
)


def _child_prefix() -> list[str]:
    """How to run the child so that file modes apply: as root, drop the DAC-override capabilities."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # util-linux
    if setpriv is None:
        pytest.skip("running as root without setpriv: chmod 000 cannot deny reads here")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


async def test_permission_denied_reported_retried_and_isolated(tmp_path: Path) -> None:
    """chmod 000 really denies: as root (CI), the tailer runs in a child without CAP_DAC_OVERRIDE."""
    ok, secret, stop = tmp_path / "ok.log", tmp_path / "secret.log", tmp_path / "stop"
    append(ok, make_lines("OK", 0, 5))
    append(secret, make_lines("SECRET", 0, 5))
    os.chmod(secret, 0o000)
    script = CHILD.format(root=str(ROOT), pattern=str(tmp_path / "*.log"), stop=str(stop))
    proc = subprocess.Popen(
        [*_child_prefix(), sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        text=True,
    )
    lines: list[str] = []
    errors: list[dict[str, str]] = []

    async def pump() -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            raw = await loop.run_in_executor(None, proc.stdout.readline)
            if not raw:
                return
            msg = json.loads(raw)
            if "line" in msg:
                lines.append(msg["line"])
            else:
                errors[:] = msg["status"]

    reader = asyncio.create_task(pump())
    try:
        await wait_until(lambda: len(lines) >= 5, 15, "readable file delivered")
        await wait_until(lambda: any("ermission denied" in e["error"] for e in errors), 5, "EACCES in status")
        assert errors[0]["path"] == str(secret)
        append(ok, make_lines("OK", 5, 5))  # the other file keeps flowing
        await wait_until(lambda: len(lines) >= 10, 5, "more lines from the readable file")
        os.chmod(secret, 0o644)  # fixed by the operator: retried, read, error cleared
        await wait_until(lambda: len(lines) >= 15, 5, "previously unreadable file delivered")
        await wait_until(lambda: not errors, 5, "error cleared from status")
    finally:
        stop.touch()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await reader
    stderr = proc.stderr.read() if proc.stderr else ""
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    assert proc.returncode == 0, stderr
    assert "tail.file_error" in stderr and "tail.file_recovered" in stderr, "denial and recovery are logged"
    assert sorted(lines) == sorted(make_lines("OK", 0, 10) + make_lines("SECRET", 0, 5))
    report("permission denied (chmod 000), then fixed", 15, lines)


# -------------------------------------------------------------------------------------- over-long lines


async def test_long_lines_truncated_counted_never_dropped(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    long1 = "L" * 5000
    long2 = "é" * 3000  # 6000 bytes: the cut must not split a character
    a.write_text(f"first\n{long1}\nmiddle\n{long2}\nlast\n", encoding="utf-8")
    h = Harness(cfg(tmp_path, max_line_bytes=1024))
    await h.start()
    await h.wait_lines(5)
    await h.stop()
    assert h.lines == ["first", "L" * 1024, "middle", "é" * 512, "last"]
    assert h.stats.lines_truncated == 2
    assert h.stats.bytes_skipped == (5000 - 1024) + (6000 - 1024)
    assert h.stats.bytes_replaced == 0


async def test_fifty_megabyte_line_without_newline_bounded_memory(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, ["before"])
    chunk = b"x" * (1 << 20)
    h = Harness(cfg(tmp_path))
    tracemalloc.start()
    try:
        await h.start()
        await h.wait_lines(1)
        with open(a, "ab") as fh:
            for _ in range(50):
                fh.write(chunk)  # 50 MiB, no newline yet
        await h.wait_lines(2)  # the truncated prefix, as soon as the line is known to be too long
        await wait_until(lambda: h.stats.bytes_read >= 50 << 20, what="reader went through the 50 MiB")
        await h.stop(crash=True)  # restart mid-line: the checkpoint says "skipping"
        state = json.loads(next(iter(h.committed.values())).state)
        assert state["skipping_long_line"] is True
        with open(a, "ab") as fh:
            fh.write(chunk[:1000] + b"\nafter\n")
        await h.start()
        await h.wait_lines(3)
        await h.stop()
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.lines == ["before", "x" * 65536, "after"]
    assert h.stats.lines_truncated == 1
    bare = [b for b in h.batches if not b.lines and not b.finished]
    assert 0 < len(bare) <= 60, f"{len(bare)} position-only batches for 50 x 1 MiB reads: at most one per read"
    assert peak < 24 << 20, f"peak traced memory {peak / 2**20:.1f} MiB for a 50 MiB line"
    report("50 MiB line without newline (+ restart while skipping)", 3, h.lines)


async def test_long_partial_line_at_start_at_end(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_bytes(b"old\n" + b"y" * 5000)  # an over-long unfinished line when we first start
    h = Harness(cfg(tmp_path, start_at="end", max_line_bytes=1024))
    await h.start()
    await wait_until(lambda: bool(h.committed), what="start checkpoint")
    with open(a, "ab") as fh:
        fh.write(b"yyy\nnew\n")
    await h.wait_lines(1)
    await h.stop()
    assert h.lines == ["new"]


async def test_status_shape(tmp_path: Path) -> None:
    append(tmp_path / "a.log", ["x"])
    h = Harness(cfg(tmp_path))
    tailer = await h.start()
    await h.wait_lines(1)
    st = tailer.status()
    f = st["files"][0]
    assert {"path", "key", "offset", "size", "lag_bytes", "open", "last_error"} <= set(f)
    assert f["lag_bytes"] == 0 and f["open"] is True and st["watch_mode"] in ("inotify", "polling")
    await h.stop()
