"""Files at scale (issue 18): what 1,000 / 10,000 / 100,000 watched files cost the agent.

For each size the real agent (``python -m agent run``) follows ``<tree>/*/*.log`` (1,000 files in 1
directory, 10,000 in 10, 100,000 in 1,000: 100 files per directory beyond the first size) with 20 rules
(``bench/logdata.py``, each match its own alert), ``start_at: end``, ``max_open_files`` at its default (1024)
unless ``--max-open-files`` says otherwise, delivering to the test suite's ``FakeFlashduty`` running in this
process (limits off). Measured per run:

* **ready**: process start until ``/readyz`` answers 200 (the first scan has opened every file);
* **idle CPU**: utime+stime of the agent process (``/proc/PID/stat``) over ``--window`` seconds (60; quick 20)
  after ``--settle`` seconds (30; quick 10) of rest, as % of one core;
* **RSS** at the end of the window and **VmHWM** (the peak since start), descriptors (``/proc/PID/fd``),
  threads;
* **append latency**: ``--samples`` times (100; quick 30), one matching line (a distinct alert) is appended
  to a file drawn at random, with ``os.write`` on an O_APPEND descriptor; the time from just before the write
  until the event reaches the endpoint (both clocks are this process's ``time.time()``); the next append
  waits for that event plus 20-80 ms. A sample not delivered within 5 s is counted as lost. The first
  sample is the agent's first event since it started (its sender connects then, whatever the number of
  files: 150-250 ms here) and is reported on its own (``first event``); p50/p99/max are over the others.

Before each run every file of the tree is read once (the page cache is warm, as for files being written to;
a cold cache makes the first scan wait on the disk for each file).

The trees are generated once per size under ``bench/out/files_scale/tree-<N>`` (one short line per file) and
reused; each run starts with an empty state directory. Run it alone on the machine (the repository's rule:
one benchmark at a time)::

    .venv/bin/python bench/files_scale.py --label after
    .venv/bin/python bench/files_scale.py --quick --sizes 1k,10k
    .venv/bin/python bench/files_scale.py --plot bench/files_scale.png --plot-labels before,after
    .venv/bin/python bench/files_scale.py --profile --sizes 100k

Each run's numbers go to ``bench/out/files_scale/<label>-<size>.json``; ``--plot`` draws the saved labels
(matplotlib: ``pip install -e '.[bench]'``). ``--profile`` runs no agent process: it builds the file source's
``TailCore`` in this process on the tree and reports where the first scan and the idle rescans spend their
time (cProfile) and what the source keeps in memory per file (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    OUT,
    PY,
    ROOT,
    AgentProc,
    agent_config,
    code_version,
    cpu_seconds,
    fmt_mmm,
    free_port,
    fresh_dir,
    http_get,
    log,
    mmm,
    open_fds,
    percentile,
    proc_status,
)
from logdata import RULES, _rare_line, rules_yaml

sys.path.insert(0, str(ROOT))

from tests.fake_flashduty import FakeFlashduty

RESULTS_DIR = OUT / "files_scale"
SIZES = {"1k": (1_000, 1), "10k": (10_000, 10), "100k": (100_000, 1_000)}
SAMPLE_TIMEOUT = 5.0


# ------------------------------------------------------------------------------------------------- the tree


def tree(files: int, dirs: int) -> Path:
    """``files`` files spread evenly over ``dirs`` directories, generated once and reused."""
    root = RESULTS_DIR / f"tree-{files}"
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{files} {dirs}":
        return root
    log(f"generating {files} files in {dirs} directories under {root}")
    fresh_dir(root)
    per = files // dirs
    for d in range(dirs):
        sub = root / f"d{d:04d}"
        sub.mkdir()
        for i in range(per):
            with open(sub / f"svc-{i:04d}.log", "w") as fh:
                fh.write(f"2026-11-27 08:00:00 INFO service {d}/{i} started\n")
    marker.write_text(f"{files} {dirs}")
    return root


def tree_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*.log"))


# ------------------------------------------------------------------------------------------------- one run


def start_agent(config: Path, health_port: int, logfile: Path, root: Path) -> AgentProc:
    """``python -m agent run`` with ``root`` as its working directory: the agent package found there first
    (``--agent-root``: measure another checkout's code, e.g. ``git archive HEAD agent | tar -x -C DIR``)."""
    import subprocess

    os.chmod(config, 0o600)
    with open(logfile, "wb") as out:
        started = time.time()
        proc = subprocess.Popen([PY, "-m", "agent", "run", "-c", str(config)], cwd=root, stdout=out,
                                stderr=subprocess.STDOUT)
    return AgentProc(proc, f"http://127.0.0.1:{health_port}", started)


async def _one(size: str, files: int, dirs: int, args: argparse.Namespace, run: int) -> dict[str, Any]:
    root = tree(files, dirs)
    paths = tree_files(root)
    for path in paths:  # a warm page cache (see the module docstring)
        with open(path, "rb") as fh:
            fh.read()
    wd = fresh_dir(RESULTS_DIR / "run")
    received: dict[tuple[str, str], float] = {}
    arrived = asyncio.Event()

    def on_event(rec: dict[str, Any]) -> None:
        labels = rec["event"].get("labels", {})
        received[(labels.get("rule", ""), labels.get("id", ""))] = rec["received_at"]
        arrived.set()

    fake = FakeFlashduty(integration_key="bench-key-0123456789abcdef", per_second=None, per_minute=None,
                         history=False, on_event=on_event)
    await fake.start()
    hport = free_port()
    opts = f"    max_open_files: {args.max_open_files}\n" if args.max_open_files else ""
    logs = (f"logs:\n  - name: scale\n    paths: [{root}/*/*.log]\n    start_at: end\n{opts}"
            f"    rules:\n{rules_yaml()}")
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=fake.port, logs_yaml=logs,
                                max_per_second=1000, max_per_minute=60000, concurrency=4,
                                outbox="max_bytes: 256MiB"))
    agent = start_agent(cfg, hport, wd / "agent.log", args.agent_root)
    out: dict[str, Any] = {"size": size, "files": files, "dirs": dirs, "run": run}
    try:
        out["ready_s"] = await asyncio.to_thread(agent.wait_ready, args.ready_timeout)
        log(f"  ready after {out['ready_s']:.2f} s; settling {args.settle:g} s")
        await asyncio.sleep(args.settle)
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        rss_max = 0
        end = t0 + args.window
        while time.monotonic() < end:
            await asyncio.sleep(min(5.0, max(0.0, end - time.monotonic())))
            rss_max = max(rss_max, proc_status(agent.pid)["VmRSS"])
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        st = proc_status(agent.pid)
        out.update(cpu_pct=(c1 - c0) / (t1 - t0) * 100, window_s=t1 - t0, rss_mib=st["VmRSS"] / 1024,
                   rss_max_mib=rss_max / 1024, hwm_mib=st["VmHWM"] / 1024, threads=st.get("Threads", 0),
                   fds=open_fds(agent.pid))
        log(f"  idle {out['cpu_pct']:.3f}% of a core, RSS {out['rss_mib']:.0f} MiB (HWM {out['hwm_mib']:.0f}), "
            f"{out['fds']} fds, {out['threads']} threads")
        # append latency: one line at a time to a random file
        compiled = [(name, re.compile(p)) for name, p, _ in RULES]
        rnd = random.Random(1000 + run)
        lat: list[float] = []
        lost = 0
        c2 = cpu_seconds(agent.pid)
        for n in range(args.samples):
            target = rnd.choice(paths)
            line = _rare_line(rnd, n, 50_000_000 + run * 1_000_000 + n)
            name, rx = compiled[n % len(compiled)]
            m = rx.search(line)
            assert m is not None
            key = (name, m.group("id"))
            arrived.clear()
            fd = os.open(target, os.O_WRONLY | os.O_APPEND)
            written = time.time()
            os.write(fd, (line + "\n").encode())
            os.close(fd)
            deadline = time.monotonic() + SAMPLE_TIMEOUT
            while key not in received and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), max(0.001, deadline - time.monotonic()))
                arrived.clear()
            if key in received:
                lat.append((received[key] - written) * 1000)
            else:
                lost += 1
            await asyncio.sleep(rnd.uniform(0.02, 0.08))
        out.update(latencies_ms=lat, lost=lost, cpu_s_latency=cpu_seconds(agent.pid) - c2)
        if len(lat) > 1:
            rest = lat[1:]
            log(f"  first event {lat[0]:.1f} ms; then p50 {statistics.median(rest):.1f} ms, "
                f"p99 {percentile(rest, 99):.1f} ms, max {max(rest):.1f} ms, lost {lost}")
        status, text = await asyncio.to_thread(http_get, agent.health + "/status", 30.0)
        if status == 200:
            src = json.loads(text)["sources"]["scale"]
            out.update(watch_mode=src.get("watch_mode"), watch_error=src.get("watch_error"),
                       open_files=src.get("open_files"), status_bytes=len(text),
                       files_listed=len(src.get("files", [])),
                       files_total=src.get("files_total", len(src.get("files", []))))
    finally:
        await asyncio.to_thread(agent.stop)
        await fake.stop()
    return out


# ------------------------------------------------------------------------------------------------- report


def steady(run: dict[str, Any]) -> list[float]:
    """The append latencies after the first (the agent's first event: its sender connects then)."""
    return list(run.get("latencies_ms", [])[1:])


def _row(size: str, runs: list[dict[str, Any]]) -> str:
    lat = [v for r in runs for v in r.get("latencies_ms", [])]
    lost = sum(r.get("lost", 0) for r in runs)

    def col(key: str, fmt: str) -> str:
        return fmt_mmm([r[key] for r in runs if key in r], fmt)

    first = [r["latencies_ms"][0] for r in runs if r.get("latencies_ms")]
    p50 = [statistics.median(steady(r)) for r in runs if steady(r)]
    p99 = [percentile(steady(r), 99) for r in runs if steady(r)]
    mx = [max(steady(r)) for r in runs if steady(r)]
    return (f"| {runs[0]['files']:,} in {runs[0]['dirs']:,} | {len(runs)} | {col('ready_s', '{:.2f}')} | "
            f"{col('cpu_pct', '{:.3f}')} | {col('rss_mib', '{:.0f}')} | {col('hwm_mib', '{:.0f}')} | "
            f"{col('fds', '{:.0f}')} | {col('threads', '{:.0f}')} | {fmt_mmm(first, '{:.0f}')} | "
            f"{fmt_mmm(p50, '{:.1f}')} | {fmt_mmm(p99, '{:.1f}')} | {fmt_mmm(mx, '{:.1f}')} | {len(lat)} / {lost} |")


HEADER = ("| files in dirs | runs | ready s | idle CPU % of a core | RSS MiB | VmHWM MiB | fds | threads | "
          "first event ms | append p50 ms | append p99 ms | append max ms | samples / lost |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = [_row(size, runs) for size, runs in results.items() if runs]
    return "\n".join([HEADER, *rows]) + "\n\n(min / median / max over runs; latency percentiles per run)\n"


# ------------------------------------------------------------------------------------------------- plot


def plot(target: Path, labels: list[str]) -> None:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: .venv/bin/pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6))
    panels = [("cpu_pct", "idle CPU, % of a core", 0.5), ("rss_mib", "RSS, MiB", 150.0),
              ("ready_s", "ready after, s", 10.0), ("p99", "append latency p99, ms", 100.0)]
    for label in labels:
        xs: list[int] = []
        ys: dict[str, list[tuple[float, float, float]]] = {k: [] for k, *_ in panels}
        for size in SIZES:
            path = RESULTS_DIR / f"{label}-{size}.json"
            if not path.exists():
                continue
            runs = json.loads(path.read_text())["runs"]
            xs.append(runs[0]["files"])
            for key, *_ in panels:
                if key == "p99":
                    vals = [percentile(steady(r), 99) for r in runs if steady(r)]
                else:
                    vals = [r[key] for r in runs if key in r]
                ys[key].append(mmm(vals) if vals else (float("nan"),) * 3)
        for ax, (key, _title, _target) in zip(axes, panels, strict=True):
            lo, med, hi = (list(v) for v in zip(*ys[key], strict=True)) if ys[key] else ([], [], [])
            ax.errorbar(xs, med, yerr=[[m - a for a, m in zip(lo, med, strict=True)],
                                       [b - m for b, m in zip(hi, med, strict=True)]],
                        marker="o", capsize=3, label=label)
    for ax, (_key, title, target_value) in zip(axes, panels, strict=True):
        ax.axhline(target_value, color="red", linestyle=":", linewidth=1, label="target")
        ax.set_xscale("log")
        ax.set_xlabel("files watched")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[3].set_yscale("log")
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle("dutytail: cost vs number of watched files (median, bars min-max of runs; 20 rules, "
                 "100 files per directory; p99 after the first event)")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    log(f"wrote {target}")


# ------------------------------------------------------------------------------------------------- profile


def profile(size: str, files: int, dirs: int, seconds: float) -> None:
    """The file source's core in this process: cProfile of the first scan and of ``seconds`` of idle cycles
    (run at their own deadlines), tracemalloc of what it keeps."""
    import cProfile
    import pstats
    import tracemalloc

    from agent.tail import TailConfig, TailCore, TailStats
    from agent.tail.watch import InotifyHub

    root = tree(files, dirs)
    config = TailConfig(name="scale", paths=[f"{root}/*/*.log"], start_at="end")
    tracemalloc.start(8)
    base = tracemalloc.take_snapshot()
    hub = InotifyHub()
    core = TailCore(config, {}, is_first_start=True, stats=TailStats())
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    core.start_watching(hub, polling_only=False)
    res = core.cycle(core.box.take())
    while not core.first_scan_done or res.busy:
        res = core.cycle(core.box.take())
    prof.disable()
    first = time.perf_counter() - t0
    snap = tracemalloc.take_snapshot()
    print(f"\n### {size}: first scan {first:.2f} s (cProfile on), {len(core.table.streams):,} streams\n")
    print("```")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(18)
    print("```")
    stats = snap.compare_to(base, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"\nmemory kept after the first scan: {total / 2**20:.1f} MiB ({total / max(1, files):.0f} B per file)\n")
    print("```")
    for s in stats[:15]:
        print(f"{s.size_diff / 2**20:8.2f} MiB {s.count_diff:>9,} blocks  {s.traceback.format()[-1].strip()}")
    print("```")
    tracemalloc.stop()
    prof = cProfile.Profile()
    cycles = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        delay = res.deadline - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, seconds - (time.monotonic() - t0)))
        prof.enable()
        res = core.cycle(core.box.take())
        prof.disable()
        cycles += 1
    cpu = time.process_time() - cpu0
    print(f"\n{cycles} idle cycles in {seconds:g} s: {cpu:.2f} s CPU ({cpu / seconds * 100:.2f}% of a core, "
          "cProfile on)\n")
    print("```")
    pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    print("```")
    core.release()
    hub.stop()


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1k,10k,100k", help="of 1k,10k,100k")
    ap.add_argument("--quick", action="store_true", help="1 run, 20 s window, 10 s settle, 30 samples")
    ap.add_argument("--runs", type=int, default=None, help="runs per size (default 3; 100k: --runs-100k)")
    ap.add_argument("--runs-100k", type=int, default=1, help="runs at 100k (default 1: ~5 min each)")
    ap.add_argument("--window", type=float, default=None, help="idle window, s (default 60, quick 20)")
    ap.add_argument("--settle", type=float, default=None, help="rest after ready, s (default 30, quick 10)")
    ap.add_argument("--samples", type=int, default=None, help="appends per run (default 100, quick 30)")
    ap.add_argument("--max-open-files", type=int, default=0, help="the source's max_open_files (default: 1024)")
    ap.add_argument("--ready-timeout", type=float, default=600.0)
    ap.add_argument("--agent-root", type=Path, default=ROOT,
                    help="run the agent package found in this directory (default: this checkout)")
    ap.add_argument("--label", default="run", help="results go to bench/out/files_scale/<label>-<size>.json")
    ap.add_argument("--plot", type=Path, help="draw the saved --plot-labels into this PNG and exit")
    ap.add_argument("--plot-labels", default="before,after")
    ap.add_argument("--table", help="print the table of these saved labels (comma-separated) and exit")
    ap.add_argument("--profile", action="store_true", help="in-process profile of the source's core")
    ap.add_argument("--profile-seconds", type=float, default=65.0)
    args = ap.parse_args()
    if args.plot:
        plot(args.plot, args.plot_labels.split(","))
        return
    if args.table:
        for label in args.table.split(","):
            saved = {s: json.loads(p.read_text())["runs"] for s in SIZES
                     if (p := RESULTS_DIR / f"{label}-{s}.json").exists()}
            print(f"\n### {label}\n\n{table(saved)}")
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"unknown size {s!r} (one of {', '.join(SIZES)})")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if args.profile:
        for s in sizes:
            profile(s, *SIZES[s], args.profile_seconds)
        return
    args.window = args.window if args.window is not None else (20.0 if args.quick else 60.0)
    args.settle = args.settle if args.settle is not None else (10.0 if args.quick else 30.0)
    args.samples = args.samples if args.samples is not None else (30 if args.quick else 100)
    for name in ("max_user_watches", "max_user_instances"):
        with contextlib.suppress(OSError):
            log(f"fs.inotify.{name} = {Path(f'/proc/sys/fs/inotify/{name}').read_text().strip()}")
    code = code_version() if args.agent_root == ROOT else {"head": f"{args.agent_root}", "dirty": "?",
                                                               "hash": "?"}
    load0 = open("/proc/loadavg").read().split()[:3]
    results: dict[str, list[dict[str, Any]]] = {}
    for s in sizes:
        files, dirs = SIZES[s]
        runs = args.runs_100k if s == "100k" else (args.runs if args.runs is not None else (1 if args.quick else 3))
        results[s] = []
        for i in range(runs):
            log(f"{s}: run {i + 1}/{runs}: {files:,} files in {dirs:,} directories")
            results[s].append(asyncio.run(_one(s, files, dirs, args, i)))
        (RESULTS_DIR / f"{args.label}-{s}.json").write_text(json.dumps(
            {"label": args.label, "code": code, "args": {k: str(v) for k, v in vars(args).items()},
             "runs": results[s]}, indent=1))
    load1 = open("/proc/loadavg").read().split()[:3]
    print(f"\n### files at scale: {args.label}\n")
    print(f"agent code: {code['head']} (uncommitted changes in agent/: {code['dirty']}, hash {code['hash']}); "
          f"window {args.window:g} s after {args.settle:g} s, {args.samples} appends per run; "
          f"max_open_files {args.max_open_files or 'default (1024)'}; load average {' '.join(load0)} -> "
          f"{' '.join(load1)}\n")
    print(table(results))


if __name__ == "__main__":
    main()
