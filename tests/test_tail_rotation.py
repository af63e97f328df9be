"""Rotation and truncation with the real logrotate, live (reader lagging) and while the tailer is stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from agent.tail import TailConfig
from tests.tail_helpers import LOGROTATE, Harness, append, logrotate, make_lines, wait_until

pytestmark = pytest.mark.skipif(not shutil.which(LOGROTATE), reason="logrotate is not installed")


def cfg(tmp_path: Path, pattern: str = "app.log", **kw: object) -> TailConfig:
    base: dict[str, object] = {
        "name": "rot",
        "paths": [str(tmp_path / "logs" / pattern)],
        "start_at": "beginning",
        "rotate_wait": 0.2,
        "poll_interval": 0.2,
        "read_chunk_bytes": 4096,
    }
    base.update(kw)
    return TailConfig.model_validate(base)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    d = tmp_path / "logs"
    d.mkdir()
    return d


async def lagging(h: Harness, app: Path) -> None:
    """Start with the consumer stopped, so the reader falls behind the writer, and wait for the file to open."""
    h.gate.clear()
    tailer = await h.start()
    await wait_until(lambda: any(f["open"] for f in tailer.status()["files"]), what=f"{app} open")


# ------------------------------------------------------------------------------------------ live, lagging


@pytest.mark.parametrize(
    ("options", "scenario"),
    [
        (("create",), "logrotate create, reader lagging"),
        (("create", "dateext"), "logrotate create+dateext, reader lagging"),
        (("create", "compress"), "logrotate create+compress (no delay), reader lagging"),
        (("copytruncate",), "logrotate copytruncate, reader lagging"),
        (("copytruncate", "dateext"), "logrotate copytruncate+dateext, reader lagging"),
    ],
)
async def test_logrotate_while_reader_lags(tmp_path: Path, logs: Path, options: tuple[str, ...], scenario: str) -> None:
    app = logs / "app.log"
    old, new = make_lines("OLD", 0, 3000), make_lines("NEW", 0, 1000)
    append(app, old[:10])
    h = Harness(cfg(tmp_path), queue_size=2)
    await lagging(h, app)
    append(app, old[10:])
    logrotate(tmp_path, app, *options)
    append(app, new)
    h.gate.set()
    await h.wait_lines(4000)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(old + new, scenario)
    assert h.stats.rotations + h.stats.truncations >= 1


async def test_logrotate_delaycompress_two_rotations_lagging(tmp_path: Path, logs: Path) -> None:
    app = logs / "app.log"
    a, b, c = make_lines("A", 0, 20000), make_lines("B", 0, 500), make_lines("C", 0, 500)
    append(app, a[:10])
    h = Harness(cfg(tmp_path), queue_size=2)
    h.slow = 0.002
    tailer = await h.start()
    await h.wait_lines(10)
    append(app, a[10:])
    logrotate(tmp_path, app, "create", "compress", "delaycompress")
    append(app, b)
    await wait_until(lambda: any(line.startswith("B ") for line in h.lines), what="first B line")
    lag_a = [f for f in tailer.status()["files"] if f["state"] == "draining"]
    logrotate(tmp_path, app, "create", "compress", "delaycompress")  # A: app.log.1 -> app.log.2.gz, deleted
    assert (logs / "app.log.2.gz").exists() and not (logs / "app.log.2").exists()
    append(app, c)
    h.slow = 0
    await h.wait_lines(21000, timeout=30)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(a + b + c, "logrotate delaycompress+compress x2, reader lagging")
    assert lag_a, "A should still have been draining (read through its descriptor) at the second rotation"


@pytest.mark.parametrize("options", [("copytruncate",), ("copytruncate", "dateext", "dateformat -%s")])
async def test_copytruncate_twice_while_the_reader_is_blocked(tmp_path: Path, logs: Path,
                                                              options: tuple[str, ...]) -> None:
    """Backpressure holds the reader across two rotations: the generation between them exists only as a copy
    newer than the one holding what the reader was in, and is read whole (it used to be lost)."""
    app = logs / "app.log"
    g1, g2, g3 = make_lines("G1", 0, 3000), make_lines("G2", 0, 400), make_lines("G3", 0, 50)
    append(app, g1[:10])
    h = Harness(cfg(tmp_path), queue_size=2)
    await lagging(h, app)
    append(app, g1[10:])
    await wait_until(lambda: h.stats.batches >= 3, what="reader blocked on the full queue")
    logrotate(tmp_path, app, *options)
    append(app, g2)
    if "dateext" in options:
        await asyncio.sleep(1.1)  # dateformat -%s: a new name each second
    logrotate(tmp_path, app, *options)
    append(app, g3)
    h.gate.set()
    await h.wait_lines(len(g1) + len(g2) + len(g3))
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(g1 + g2 + g3, f"logrotate {'+'.join(options)} twice, reader blocked")


async def test_copytruncate_live_no_lag(tmp_path: Path, logs: Path) -> None:
    app = logs / "app.log"
    a, b = make_lines("A", 0, 200), make_lines("B", 0, 50)
    append(app, a)
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(200)
    logrotate(tmp_path, app, "copytruncate")
    append(app, b)
    await h.wait_lines(250)
    await h.stop()
    h.assert_exactly(a + b, "logrotate copytruncate, reader caught up")


async def test_plain_truncation_live(tmp_path: Path, logs: Path) -> None:
    app = logs / "app.log"
    a, b, c = make_lines("A", 0, 100), make_lines("B", 0, 300), make_lines("C", 0, 5)
    append(app, a)
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(100)
    os.truncate(app, 0)
    await wait_until(lambda: h.stats.truncations == 1, what="truncation seen")
    append(app, c)
    await h.wait_lines(105)
    # Truncated and rewritten past the old offset between two looks: caught by the fingerprint, not size.
    with open(app, "r+b") as fh:
        fh.truncate(0)
        fh.write("".join(x + "\n" for x in b).encode())
    await h.wait_lines(405)
    await h.stop()
    h.assert_exactly(a + b + c, "truncate live (incl. rewrite past old offset)")


# ------------------------------------------------------------------------------------- while stopped


@pytest.mark.parametrize(
    ("options", "pattern", "scenario"),
    [
        (("create",), "app.log", "stopped: logrotate create"),
        (("create", "dateext"), "app.log", "stopped: logrotate create+dateext"),
        (("create", "compress", "delaycompress"), "app.log", "stopped: create+compress+delaycompress"),
        (("create",), "app.log*", "stopped: create, glob also matches app.log.1"),
        (("copytruncate",), "app.log", "stopped: copytruncate, copy present"),
        (("copytruncate", "dateext"), "app.log", "stopped: copytruncate+dateext, copy present"),
    ],
)
async def test_rotation_while_stopped(
    tmp_path: Path, logs: Path, options: tuple[str, ...], pattern: str, scenario: str
) -> None:
    app = logs / "app.log"
    a1, a2, b = make_lines("A", 0, 300), make_lines("A", 300, 200), make_lines("B", 0, 100)
    append(app, a1)
    h = Harness(cfg(tmp_path, pattern))
    await h.start()
    await h.wait_lines(300)
    await h.stop()
    append(app, a2)  # written while stopped, then rotated away before the tailer comes back
    logrotate(tmp_path, app, *options)
    append(app, b)
    await h.start()
    await h.wait_lines(600)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(a1 + a2 + b, scenario)
    live = 2 if pattern.endswith("*") else 1  # with app.log* the rotated file is still a followed file
    assert len(h.committed) == live, f"only live files keep a checkpoint: {list(h.committed)}"


async def test_rotation_while_stopped_after_crash_mid_file(tmp_path: Path, logs: Path) -> None:
    """Crash with batches still queued (never committed), rotate, restart: resumes from the committed offset."""
    app = logs / "app.log"
    a, b = make_lines("A", 0, 3000), make_lines("B", 0, 100)
    append(app, a)
    h = Harness(cfg(tmp_path), queue_size=2)
    h.slow = 0.001
    await h.start()
    await h.wait_lines(500)
    await h.stop(crash=True)
    assert len(h.lines) < 3000
    logrotate(tmp_path, app, "create", "dateext")
    append(app, b)
    await h.start()
    await h.wait_lines(3100)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(a + b, "crash mid-file, rotated while stopped")


COMPRESSORS = {
    "gzip": ("compress",),
    "bzip2": ("compress", "compresscmd /usr/bin/bzip2", "uncompresscmd /usr/bin/bunzip2", "compressext .bz2"),
    "xz": ("compress", "compresscmd /usr/bin/xz", "uncompresscmd /usr/bin/unxz", "compressext .xz"),
    "zstd": ("compress", "compresscmd /usr/bin/zstd", "compressoptions -q --rm", "uncompresscmd /usr/bin/unzstd",
             "compressext .zst"),
}


@pytest.mark.parametrize("compressor", sorted(COMPRESSORS))
async def test_compress_without_delaycompress_while_stopped_reads_the_tail_from_the_archive(
        tmp_path: Path, logs: Path, compressor: str) -> None:
    """The rotated stream exists only compressed: its unread tail is read from the archive (it was lost: 170
    written, 120 delivered), once, and nothing before the checkpoint again."""
    if not shutil.which(compressor):
        pytest.skip(f"{compressor} is not installed")
    app = logs / "app.log"
    a1, a2, b = make_lines("A", 0, 100), make_lines("A", 100, 50), make_lines("B", 0, 20)
    append(app, a1)
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(100)
    await h.stop()
    append(app, a2)
    logrotate(tmp_path, app, "create", *COMPRESSORS[compressor])
    assert not (logs / "app.log.1").exists(), "the scenario: only the archive is left"
    append(app, b)
    await h.start()
    await h.wait_lines(170)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(a1 + a2 + b, f"stopped: compress ({compressor}) without delaycompress")
    assert h.stats.compressed_reads == 1 and h.stats.bytes_lost == 0
    assert len(h.committed) == 1 and h.finished, "the archived stream was finished and its checkpoint forgotten"


async def test_an_unrelated_archive_is_never_taken_for_the_stream(tmp_path: Path, logs: Path) -> None:
    import gzip

    app = logs / "app.log"
    a1, b = make_lines("A", 0, 100), make_lines("B", 0, 20)
    append(app, a1)
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(100)
    await h.stop()
    os.rename(app, logs / "gone")
    os.unlink(logs / "gone")
    with gzip.open(logs / "app.log.1.gz", "wt") as archive:  # same name pattern, other content
        archive.write("".join(f"{line}\n" for line in make_lines("X", 0, 200)))
    append(app, b)
    await h.start()
    await h.wait_lines(120)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(a1 + b, "stopped: file deleted, an unrelated archive beside it")
    assert h.stats.compressed_reads == 0


@pytest.mark.parametrize("layout", ["olddir", "olddir+compress"])
async def test_olddir_while_stopped_is_found_through_rotated_paths(tmp_path: Path, logs: Path, layout: str) -> None:
    """logrotate `olddir` puts the rotated file in another directory; `rotated_paths` says where (it lost the
    unread tail: 150 of 600)."""
    app = logs / "app.log"
    old = logs / "old"
    old.mkdir()
    a1, a2, b = make_lines("A", 0, 300), make_lines("A", 300, 150), make_lines("B", 0, 150)
    append(app, a1)
    h = Harness(cfg(tmp_path, rotated_paths=[str(old / "app.log*")]))
    await h.start()
    await h.wait_lines(300)
    await h.stop()
    append(app, a2)
    options = ["create", f"olddir {old}"] + (["compress"] if "compress" in layout else [])
    logrotate(tmp_path, app, *options)
    assert list(old.iterdir()), "the scenario: the rotated file sits in the old directory"
    append(app, b)
    await h.start()
    await h.wait_lines(600)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(a1 + a2 + b, f"stopped: logrotate {layout}, rotated_paths")


async def test_truncated_and_rewritten_while_stopped(tmp_path: Path, logs: Path) -> None:
    """Same fixed header, rewritten longer than the old offset: size says 'grew', bytes say 'rewritten'."""
    app = logs / "app.log"
    header = "# app v1 log format=json ".ljust(300, "#")
    a, b = make_lines("A", 0, 50), make_lines("B", 0, 200)
    append(app, [header, *a])
    h = Harness(cfg(tmp_path, fingerprint_bytes=256))
    await h.start()
    await h.wait_lines(51)
    await h.stop()
    app.write_bytes("".join(x + "\n" for x in [header, *b]).encode())  # no copy kept: plain rewrite
    assert app.stat().st_size > 51 * 41
    await h.start()
    await h.wait_lines(252)
    await h.stop()
    h.lines = [line for line in h.lines if line != header]
    h.assert_exactly(a + b, "truncated + rewritten past old offset while stopped (same header)")


async def test_copytruncate_while_stopped_without_copy(tmp_path: Path, logs: Path) -> None:
    app = logs / "app.log"
    a, b = make_lines("A", 0, 100), make_lines("B", 0, 10)
    append(app, a)
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(100)
    await h.stop()
    os.truncate(app, 0)
    append(app, b)
    await h.start()
    await h.wait_lines(110)
    await h.stop()
    h.assert_exactly(a + b, "plain truncation while stopped")


async def test_inode_reuse_with_stale_checkpoint(tmp_path: Path, logs: Path) -> None:
    """A checkpoint whose device+inode now belong to other content must not be resumed."""
    app = logs / "app.log"
    a = make_lines("A", 0, 100)
    append(app, a)
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(100)
    await h.stop()
    # Replace the file keeping the inode number is what inode reuse looks like; emulate it exactly by
    # rewriting the same inode with other content of a larger size.
    other = make_lines("Z", 0, 150)
    with open(app, "r+b") as fh:
        fh.write("".join(x + "\n" for x in other).encode())
    await h.start()
    await h.wait_lines(250)
    await h.stop()
    h.assert_exactly(a + other, "inode reused by other content while stopped")


async def test_chaos_writer_rotations_and_crashes(tmp_path: Path, logs: Path) -> None:
    """Random interleaving of writes, partial lines, rotations (rename and copytruncate) and crash restarts."""
    import random

    rng = random.Random(1234)
    app = logs / "app.log"
    written: list[str] = []
    seq = 0
    gen = 0
    h = Harness(cfg(tmp_path, rotate_wait=0.05), queue_size=4)
    await h.start()
    pending_tail = b""
    for step in range(40):
        action = rng.random()
        if action < 0.55:
            n = rng.randint(1, 300)
            lines = make_lines(f"G{gen}", seq, n)
            seq += n
            data = pending_tail + "".join(x + "\n" for x in lines).encode()
            cut = rng.randint(0, 30) if rng.random() < 0.3 else 0
            head, pending_tail = (data[:-cut], data[-cut:]) if cut else (data, b"")
            with open(app, "ab") as fh:
                fh.write(head)
            written.extend(lines)
        elif action < 0.7:
            with open(app, "ab") as fh:
                fh.write(pending_tail)
            pending_tail = b""
            logrotate(tmp_path, app, rng.choice(["create", "copytruncate"]), "rotate 1000")
            gen += 1
            seq = 0
        elif action < 0.85 and h._run is not None:
            await h.stop(crash=rng.random() < 0.7)
        else:
            if h._run is None:
                await h.start()
            await wait_until(lambda: len(h.lines) >= len(written) * 0.5, timeout=10, what="progress")
        if step % 10 == 9 and h._run is None:
            await h.start()
    with open(app, "ab") as fh:
        fh.write(pending_tail)
    if h._run is None:
        await h.start()
    await h.wait_lines(len(written), timeout=30)
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(written, "chaos: writes, partial lines, rotations, crash restarts")
