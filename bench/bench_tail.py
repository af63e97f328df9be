"""Benchmark the file source alone: read throughput on one large file, and idle CPU with 2,000 watched files.

    .venv/bin/python bench/bench_tail.py                 # 256 MiB file, 2,000 idle files for 30 s
    .venv/bin/python bench/bench_tail.py --size 1GiB     # the 1 GiB variant
    .venv/bin/python bench/bench_tail.py --idle-seconds 10 --skip-polling

Prints a markdown table. Throughput is measured from Tailer start to the last line taken off the queue by
a consumer that only counts (no matching), with the file freshly written (warm page cache). For context
the same file is also read with the simplest possible loop (1 MiB reads + bytes split), the upper bound
for any Python reader here. Idle CPU is this process's user+system CPU time (getrusage) over the idle
window, divided by wall time: inotify mode (the default) and, for comparison, the polling fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.source import Batch
from agent.tail import FileSource, TailConfig
from agent.units import parse_size

LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]


def generate(path: Path, size: int) -> int:
    """Write ~``size`` bytes of realistic log lines (80-200 bytes); returns the number of lines."""
    lines = 0
    block: list[str] = []
    written = 0
    with open(path, "w", encoding="utf-8") as fh:
        i = 0
        while written < size:
            block.clear()
            for _ in range(10_000):
                i += 1
                msg = f"request id={i:010d} user=u{i % 977} path=/api/v1/items/{i % 10007} took={i % 1000}ms"
                block.append(
                    f"2026-11-27T10:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z {LEVELS[i % 6]} "
                    f"svc-{i % 13} {msg}{' extra' * (i % 15)}\n"
                )
            chunk = "".join(block)
            fh.write(chunk)
            written += len(chunk)
            lines += len(block)
    return lines


def raw_split_rate(path: Path) -> float:
    """Lines/s of the bare minimum: 1 MiB reads, split on newlines (no decoding, no bookkeeping)."""
    start = time.perf_counter()
    count = 0
    rest = b""
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(1 << 20):
            data = rest + chunk
            parts = data.split(b"\n")
            rest = parts.pop()
            count += len(parts)
    return count / (time.perf_counter() - start)


async def throughput(path: Path, expected: int, chunk: int) -> tuple[float, float, int, float]:
    config = TailConfig(name="bench", paths=[str(path)], start_at="beginning", read_chunk_bytes=chunk)
    tailer = FileSource(config, {}, is_first_start=True)
    queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=64)
    seen = 0
    start, cpu_start = time.perf_counter(), cpu_seconds()
    task = asyncio.create_task(tailer.run(queue))
    while seen < expected:
        batch = await queue.get()
        seen += len(batch.lines)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await tailer.close(None)
    return seen / elapsed, path.stat().st_size / elapsed / 2**20, seen, seen / cpu


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def idle_cpu(directory: Path, files: int, seconds: float, polling: bool) -> dict[str, float | str]:
    config = TailConfig(name="idle", paths=[str(directory / "*.log")], start_at="beginning")
    tailer = FileSource(config, {}, is_first_start=True, force_polling=polling)
    queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=256)
    seen = 0
    task = asyncio.create_task(tailer.run(queue))
    start = time.perf_counter()
    while seen < files:
        batch = await queue.get()
        seen += len(batch.lines)
    startup = time.perf_counter() - start

    probed = asyncio.Event()

    async def drain() -> None:
        while True:
            batch = await queue.get()
            if "probe" in batch.lines:
                probed.set()

    drainer = asyncio.create_task(drain())
    await asyncio.sleep(1.0)  # let the initial burst settle
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, wall1 = cpu_seconds(), time.perf_counter()
    status = tailer.status()
    # Liveness check after the idle window: one append must still be picked up.
    probe = directory / "f00007.log"
    with open(probe, "a") as fh:
        fh.write("probe\n")
    t_probe = time.perf_counter()
    await asyncio.wait_for(probed.wait(), 60)
    latency = time.perf_counter() - t_probe
    for t in (task, drainer):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await t
    await tailer.close(None)
    return {
        "mode": status["watch_mode"],
        "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
        "startup_s": startup,
        "open_files": status["open_files"],
        "watched_dirs": len(status["watched_dirs"]),
        "probe_latency_s": latency,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="256MiB", help="size of the generated file (e.g. 256MiB, 1GiB)")
    parser.add_argument("--files", type=int, default=2000, help="idle files for the CPU measurement")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--chunk", default="1MiB", help="read_chunk_bytes")
    parser.add_argument("--dir", default=None, help="scratch directory (default: a new one under /tmp)")
    parser.add_argument("--skip-polling", action="store_true", help="skip the polling-fallback idle run")
    args = parser.parse_args()

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    scratch = Path(tempfile.mkdtemp(prefix="bench-tail-", dir=args.dir))
    rows: list[tuple[str, str]] = []
    try:
        size = parse_size(args.size)
        big = scratch / "big.log"
        t0 = time.perf_counter()
        lines = generate(big, size)
        gen_s = time.perf_counter() - t0
        raw = raw_split_rate(big)
        load = os.getloadavg()[0]
        rate, mbps, seen, per_cpu = await throughput(big, lines, parse_size(args.chunk))
        assert seen == lines, (seen, lines)
        rows += [
            ("file", f"{big.stat().st_size / 2**20:.0f} MiB, {lines:,} lines (generated in {gen_s:.1f} s)"),
            ("tailer throughput (wall clock)", f"**{rate / 1e6:.2f} M lines/s** ({mbps:.0f} MiB/s)"),
            ("tailer throughput per CPU-second used", f"{per_cpu / 1e6:.2f} M lines/s"),
            ("machine load average at start", f"{load:.2f} (other work on the 2 cores lowers wall-clock rates)"),
            ("bare read+split (upper bound)", f"{raw / 1e6:.2f} M lines/s"),
        ]
        big.unlink()

        idle_dir = scratch / "idle"
        idle_dir.mkdir()
        for i in range(args.files):
            (idle_dir / f"f{i:05d}.log").write_text(f"file {i} started\n")
        modes = [False] if args.skip_polling else [False, True]
        for polling in modes:
            r = await idle_cpu(idle_dir, args.files, args.idle_seconds, polling)
            label = "polling fallback (poll_interval 1 s)" if polling else "inotify (rescan_interval 10 s)"
            rows.append(
                (
                    f"idle CPU, {args.files:,} files, {label}",
                    f"**{r['cpu_pct']:.2f} %** of one core over {args.idle_seconds:.0f} s "
                    f"(mode={r['mode']}, open fds={r['open_files']}, watched dirs={r['watched_dirs']}, "
                    f"initial read {r['startup_s']:.2f} s, append seen after {r['probe_latency_s'] * 1000:.0f} ms)",
                )
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n### bench_tail ({os.cpu_count()} CPUs, Python {sys.version.split()[0]}, --size {args.size})\n")
    print("| measure | result |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    asyncio.run(main())
