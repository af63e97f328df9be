"""dutytail benchmark suite (issue 8): scan throughput vs peers, alert latency, idle cost, backlog, outbox.

    .venv/bin/python bench/run.py                  # full: 1 GiB scan file, 3 runs of everything
    .venv/bin/python bench/run.py --quick          # smoke run: ~100 MiB, 1 run, short windows
    .venv/bin/python bench/run.py --size 512MiB --runs 3 --sections scan,profile

Prints a markdown report on stdout and writes it to bench/RESULTS.md (raw numbers: bench/out/results.json),
keeping the sections other benchmarks put there (fleet, formats, growth, footprint, files_scale).
Generated data and scratch directories live under bench/out/ (gitignored). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH, OUT, ROOT, code_version, fmt_mmm, log, machine, mmm, percentile
from logdata import RULES, generate, parse_size

SECTIONS = ("scan", "latency", "idle", "backlog", "outbox", "profile")


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _f(v: float, fmt: str = "{:,.1f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


# ------------------------------------------------------------------------------------------------ sections


def section_scan(args: argparse.Namespace, info: Any, out: list[str], raw: dict[str, Any]) -> None:
    from scan import bench_scan

    res = bench_scan(info, args.runs, not args.no_naive, args.scan_timeout, args.naive_runs)
    raw["scan"] = {k: [asdict(r) for r in v] for k, v in res.items()}
    out += [
        "## 1. Scan throughput",
        "",
        f"File: {info.mib:,.0f} MiB, {info.lines:,} lines (syslog, nginx access/error, Java app log with stack "
        f"traces), {len(RULES)} rules, {info.matches:,} matching lines ({info.matches / info.lines:.2%}); each "
        "matching line carries a unique number. The file ends with a matching line. Page cache warm for every "
        "contender.",
        "",
        "The agent runs twice on it. First as a user would configure it: one alert per rule (no `identity`), so "
        f"the {info.matches:,} matches become {len(RULES)} alerts and {len(RULES)} events, under the agent's own "
        "defaults for pacing (Flashduty's 100 requests/s and 1,000/min per integration), sender concurrency and "
        "storm control. The targets are judged on this row. Then as a stress test of delivery: the rules capture "
        f"the unique number as identity, so every match is its own alert and its own POST ({info.matches:,} "
        "requests), with pacing and storm control lifted. Flashduty would not accept that: at 1,000 "
        f"requests/min one integration takes {info.matches / 1000:.1f} min for them, whatever the agent does.",
        "",
        "| contender | timed from → to | seconds | lines/s | MiB/s | CPU s | peak RSS MiB | time vs grep | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    grep_med = mmm([r.seconds for r in res["grep"] if r.ok])[1] if any(r.ok for r in res["grep"]) else float("nan")
    labels = {
        "agent_few": ("dutytail (`python -m agent run`, hyperscan): one alert per rule, default pacing and storm "
                      "control", "process start → every line read and every match counted (/metrics, 0.1 s polls) "
                      "and every event at the endpoint"),
        "agent": ("dutytail, stress: every match its own alert and POST, pacing and storm control lifted "
                  "(diagnostic)", "process start → last event at the endpoint"),
        "agent_queued": ("dutytail, the stress row with the endpoint down (diagnostic)",
                         "process start → every line read and every event durably queued (/metrics, 0.1 s polls)"),
        "grep": ("`LC_ALL=C grep -E -c -f patterns`", "exec → exit"),
        "rsyslog": ("rsyslog imfile → omfile (C, no matching)", "process start → last line in the sink"),
        "naive": ("naive Python: pygtail + 20 `re`", "process start → exit"),
    }
    for key in ("agent_few", "agent", "agent_queued", "grep", "rsyslog", "naive"):
        runs = res.get(key, [])
        name, timed = labels[key]
        good = [r for r in runs if r.ok]
        notes = "; ".join(sorted({r.note for r in runs if r.note}))
        endpoint_cpu = [r.extra["endpoint_cpu"] for r in good if "endpoint_cpu" in r.extra]
        if endpoint_cpu:
            notes = "; ".join(filter(None, [notes, f"the endpoint's own CPU: {fmt_mmm(endpoint_cpu, '{:.1f}')} s"]))
        if not good:
            out.append(f"| {name} | {timed} | - | - | - | - | - | - | {notes or 'not run'} |")
            continue
        secs = [r.seconds for r in good]
        n = f" ({len(good)} run{'s' if len(good) > 1 else ''})"
        out.append(
            f"| {name}{n} | {timed} | {fmt_mmm(secs, '{:.2f}')} | {fmt_mmm([info.lines / s for s in secs])} | "
            f"{fmt_mmm([info.mib / s for s in secs], '{:.1f}')} | {fmt_mmm([r.cpu for r in good], '{:.1f}')} | "
            f"{fmt_mmm([r.rss for r in good], '{:.0f}')} | {_f(mmm(secs)[1] / grep_med, '{:.1f}x')} | {notes} |"
        )
        if key in ("agent", "agent_few", "agent_queued"):
            steady = [r.seconds - r.extra.get("ready_s", float("nan")) for r in good]
            steady = [s for s in steady if not math.isnan(s)]
            if steady:
                out.append(
                    f"| ↳ same, after startup | first /metrics answer → same end | {fmt_mmm(steady, '{:.2f}')} | "
                    f"{fmt_mmm([info.lines / s for s in steady])} | {fmt_mmm([info.mib / s for s in steady], '{:.1f}')}"
                    f" | | | {_f(mmm(steady)[1] / grep_med, '{:.1f}x')} | startup (imports, hyperscan compile): "
                    f"{fmt_mmm([r.extra['ready_s'] for r in good], '{:.2f}')} s |"
                )
    def targets(key: str) -> str:
        good = [r.seconds for r in res.get(key, []) if r.ok]
        if not good:
            return "not measured"
        med = mmm(good)[1]
        return (f">= 1,000,000 lines/s: {_verdict(info.lines / med >= 1e6)} ({info.lines / med:,.0f}); within 3x of "
                f"grep's time: {_verdict(med <= 3 * grep_med)} ({med / grep_med:.1f}x)")

    out += [
        "",
        "min / median / max over runs (lines/s computed per run). Targets (median, end to end, first row): "
        f"{targets('agent_few')}. The stress row against the same targets: {targets('agent')}.",
        "",
        "How to read the agent rows: the first row is the whole path (read, match, alert state, outbox, one POST "
        "per alert) with the read + match path dominating. In the stress row every matching line is one HTTP "
        "request (Flashduty takes one event per request), all in one Python process (one GIL) with reading and "
        "matching, while the endpoint (the standalone fake, an aiohttp server that validates every event) runs "
        "on the same 2 cores; its CPU is in the note. The endpoint-down row is the stress row's work up to the "
        "network: every matching line turned into an event and committed to the on-disk outbox.",
    ]
    out.append("")


def section_latency(args: argparse.Namespace, out: list[str], raw: dict[str, Any]) -> None:
    from latency import bench_latency

    res = bench_latency(OUT, args.runs, args.latency_count, args.latency_rate)
    raw["latency"] = res
    out += [
        "## 2. Alert latency",
        "",
        f"{args.latency_count:,} lines appended at {args.latency_rate:g}/s to a watched file (`os.write`, O_APPEND), "
        "each a distinct alert; timed from just before the write to the event's arrival at an in-process "
        "FakeFlashduty (`on_event`, limits off). `start_at: end`, pacing 1000/s, storm caps raised, "
        "`fsync: normal`. Per-run p50/p99/max, then min / median / max over runs.",
        "",
        "| config | p50 ms | p99 ms | max ms | lost | p99 < 50 ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, runs in res.items():
        p50 = [percentile(r["latencies_ms"], 50) for r in runs]
        p99 = [percentile(r["latencies_ms"], 99) for r in runs]
        mx = [max(r["latencies_ms"]) for r in runs if r["latencies_ms"]]
        lost = sum(r["lost"] for r in runs)
        out.append(f"| {label} | {fmt_mmm(p50, '{:.1f}')} | {fmt_mmm(p99, '{:.1f}')} | {fmt_mmm(mx, '{:.1f}')} | "
                   f"{lost} | {_verdict(mmm(p99)[1] < 50)} |")
    out.append("")


def section_idle(args: argparse.Namespace, out: list[str], raw: dict[str, Any]) -> None:
    from idle import bench_idle

    res = bench_idle(OUT, args.runs, 2000, args.idle_window, args.idle_settle)
    raw["idle"] = res

    def col(key: str, fmt: str = "{:.2f}") -> str:
        return fmt_mmm([r[key] for r in res], fmt)

    cpu_med, rss_med = mmm([r["cpu_pct"] for r in res])[1], mmm([r["rss"] for r in res])[1]
    out += [
        "## 3. Idle cost",
        "",
        f"2,000 idle files under one glob (default tail options: `max_open_files: 1024`, inotify) and 20 checks "
        f"(10 `file_age`, 10 `tcp` to a local listener; intervals 10 s..28 s). Measured over {args.idle_window:g} s "
        f"starting {args.idle_settle:g} s after /readyz: CPU = Δ(utime+stime)/Δt from /proc/PID/stat, RSS = VmRSS "
        "at the end.",
        "",
        "| CPU % of one core | RSS MiB | VmHWM MiB | threads | open fds | files tailed (/healthz) | tcp probes seen | "
        "ready after s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {col('cpu_pct')} | {col('rss', '{:.1f}')} | {col('hwm', '{:.1f}')} | {col('threads', '{:.0f}')} | "
        f"{col('fds', '{:.0f}')} | {col('files_tailed', '{:.0f}')} | {col('tcp_probes', '{:.0f}')} | "
        f"{col('ready_s', '{:.1f}')} |",
        "",
        f"Targets (median): < 0.5% of a core: {_verdict(cpu_med < 0.5)} ({cpu_med:.2f}%); < 60 MiB RSS: "
        f"{_verdict(rss_med < 60)} ({rss_med:.1f} MiB).",
        "",
    ]
    if args.no_diagnostics:
        return
    from idle import bench_idle_diagnostics

    diag = bench_idle_diagnostics(OUT, args.idle_window, args.idle_settle)
    raw["idle_diagnostics"] = diag
    out += ["Diagnostics (one run each, same window) to attribute the cost:", "",
            "| variant | CPU % | RSS MiB | open fds | files tailed |", "|---|---:|---:|---:|---:|"]
    out += [f"| {label} | {r['cpu_pct']:.2f} | {r['rss']:.1f} | {r['fds']} | {r['files_tailed']} |"
            for label, r in diag.items()]
    out.append("")


def section_backlog(args: argparse.Namespace, out: list[str], raw: dict[str, Any]) -> None:
    from backlog import RATE, UNPACED, bench_backlog, bench_unpaced

    res = bench_backlog(OUT, args.backlog_runs, args.backlog_events, args.backlog_fill_timeout,
                        args.backlog_drain_timeout)
    raw["backlog"] = res
    unpaced = None
    if not args.no_diagnostics:
        n = max(20_000, args.backlog_events // 5)
        unpaced = bench_unpaced(OUT, n, 120.0 + n / 1000, args.backlog_drain_timeout)
        raw["backlog_unpaced"] = unpaced

    def col(key: str, fmt: str = "{:,.0f}") -> str:
        return fmt_mmm([r[key] for r in res], fmt)

    drained = all(r["drained"] for r in res)
    lost = sum(r["lost"] for r in res)
    out += [
        "## 4. Backlog",
        "",
        f"{args.backlog_events:,} events queued while the endpoint is down: {args.backlog_events // 2:,} lines, each "
        "firing a distinct alert of a rule with `resolve: {after: 1s}` (so each line gives a Warning and its Ok, "
        "N/2 distinct keys; `alerts.max_open_alerts` at its default of 20,000, so the source pauses while due "
        "alerts resolve). The push URL points at a port with no listener; "
        f"then the standalone fake starts on it. Sender settings for this section: `max_per_second: {RATE}`, "
        f"`max_per_minute: {RATE * 60}`, `concurrency: 64`, `retry_initial: 200ms`, `retry_max: 1s`; "
        f"`outbox.max_bytes: 8GiB`, storm caps raised. The drain is cut after {args.backlog_drain_timeout:g} s; "
        "what was not delivered by then is read from outbox.db after a graceful stop, so 'lost' is exact either "
        "way.",
        "",
        "| runs | fill s (start → all queued) | peak RSS fill MiB | max open alerts (fill) | peak RSS drain MiB | "
        "first event after release s | "
        "drain rate ev/s (first→last) | steady ev/s (10%..90%) | configured ev/s | delivered | left queued | lost "
        "| duplicates | Ok before its alert |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {len(res)} | {col('fill_s', '{:.1f}')} | {col('peak_rss_fill')} | "
        f"{fmt_mmm([r.get('max_open_alerts_fill', float('nan')) for r in res])} | {col('peak_rss_drain')} | "
        f"{col('first_after_release_s', '{:.2f}')} | {col('drain_rate')} | {col('steady_rate')} | {RATE:,} | "
        f"{col('distinct_key_status')} | {col('left_in_outbox')} | {lost} | {col('duplicates')} | "
        f"{col('out_of_order')} |",
        "",
        f"Drain rate equals the configured pacing: {_verdict(mmm([r['steady_rate'] for r in res])[1] >= 0.9 * RATE)}."
        f" Nothing lost: {_verdict(lost == 0)}. Fully drained within the cut: {'yes' if drained else 'no'}"
        + ("" if drained else
           f" (at the measured rate a full drain of {args.backlog_events:,} takes about "
           f"{args.backlog_events / max(1.0, mmm([r['drain_rate'] for r in res])[1]) / 60:,.0f} min)") + ".",
        "",
    ]
    if unpaced is not None:
        u = unpaced
        out += [
            f"Diagnostic, one run: the machine's ceiling. {u['events']:,} events, `max_per_second: {UNPACED:,}` "
            "(pacing out of the way), otherwise the same. The agent (aiohttp client) and the fake (aiohttp server) "
            "share the 2 cores; aiohttp alone costs about 250 µs of CPU per request on this machine.",
            "",
            "| events | fill s | peak RSS fill MiB | drain rate ev/s (first→last) | steady ev/s (10%..90%) | delivered "
            "| left queued | lost | duplicates | Ok before its alert |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {u['events']:,} | {u['fill_s']:.1f} | {u['peak_rss_fill']:,.0f} | {u['drain_rate']:,.0f} | "
            f"{u['steady_rate']:,.0f} | {u['distinct_key_status']:,} | {u['left_in_outbox']:,} | {u['lost']} | "
            f"{u['duplicates']} | {u['out_of_order']} |",
            "",
        ]


def section_outbox(args: argparse.Namespace, out: list[str], raw: dict[str, Any]) -> None:
    from outbox_bench import bench_outbox

    res = bench_outbox(OUT, args.runs, args.outbox_seconds)
    raw["outbox"] = {str(k): v for k, v in res.items()}
    out += [
        "## 5. Outbox throughput (group commit)",
        "",
        "The outbox's ordered writer (`agent.outbox.Outbox(...).writer`) used directly: N concurrent committers "
        "each loop `await writer.commit(Commit(events=[...], "
        f"checkpoints=[1]))` for {args.outbox_seconds:g} s; `commit` returns after the transaction holding the "
        "change committed (durable per the fsync mode). Event body ~600 bytes. `flush_interval` default is "
        "`OutboxConfig`'s default.",
        "",
        "| fsync | flush_interval | committers | events/commit | events/s | commits/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (fsync, committers, per_commit, _flush), runs in res.items():
        fi = runs[0]["flush_interval"]
        label = f"{fi:g} s" + (" (default)" if _flush is None else "")
        out.append(f"| {fsync} | {label} | {committers} | {per_commit} | "
                   f"{fmt_mmm([r['events_s'] for r in runs])} | {fmt_mmm([r['commits_s'] for r in runs])} |")
    out.append("")


def _profile_tables(res: dict[str, Any], out: list[str]) -> None:
    total = res["total"] or 1
    cpu = res["cpu"] or 1
    out += ["| thread role | % of all samples |", "|---|---:|"]
    out += [f"| {role} | {n / total:.1%} |" for role, n in res["roles"]]
    out += ["", f"Below: % of the {cpu:,} non-waiting (on-CPU) samples.", "",
            "| self time (leaf frame), top functions | % on-CPU |", "|---|---:|"]
    out += [f"| `{name}` | {n / cpu:.1%} |" for name, n in res["self"][:15]]
    agent_incl = [(name, n) for name, n in res["incl"]
                  if name.startswith("agent/") and not name.startswith(("agent/__main__", "agent/cli.py"))][:20]
    out += ["", "| inclusive time, agent functions | % on-CPU |", "|---|---:|"]
    out += [f"| `{name}` | {n / cpu:.1%} |" for name, n in agent_incl]
    out.append("")


def section_profile(args: argparse.Namespace, info: Any, out: list[str], raw: dict[str, Any]) -> None:
    from profile_scan import profile_scan

    out += ["## Profile of the scan (py-spy)", ""]
    for name, few, label in (("scan", False, f"section 1's stress row: {info.matches:,} events"),
                             ("scan-few-alerts", True, "section 1's first row: one alert per rule, 20 events")):
        res = profile_scan(info, args.scan_timeout, few_alerts=few, name=name)
        if res is None:
            out += ["Skipped: py-spy not installed (`.venv/bin/pip install py-spy`).", ""]
            return
        run = res["run"]
        raw[f"profile_{name}"] = {k: v for k, v in res.items() if k != "run"}
        out += [
            f"### {label}",
            "",
            f"`py-spy record --nonblocking --threads --rate 250 --format raw` launching the agent for one scan of "
            f"the same file: {run.seconds:.1f} s end to end under the profiler, agent CPU {run.cpu:.1f} s "
            f"({run.cpu / run.seconds:.0%} of one core on average), {res['total']:,} samples (threads py-spy saw "
            f"as idle are not sampled; waits inside C calls it could not tell apart are grouped as 'waiting'). "
            f"Raw stacks: `{res['raw']}`.",
            "",
        ]
        _profile_tables(res, out)
    _profile_drain(args, out, raw)


def _profile_drain(args: argparse.Namespace, out: list[str], raw: dict[str, Any]) -> None:
    from profile_scan import profile_drain

    events, seconds = (20_000, 15.0) if args.quick else (40_000, 30.0)
    res = profile_drain(events, seconds)
    if res is None:
        return
    raw["profile_drain"] = dict(res)
    total = res["total"] or 1
    b = res["backlog"]
    out += [
        "## Profile of the backlog drain (py-spy)",
        "",
        f"Section 4's setup with {events:,} events; py-spy attached (`--pid`, non-blocking) for the first "
        f"{seconds:g} s after the release, while the agent delivered {b['distinct_key_status']:,} events "
        f"({b['drain_rate']:,.0f} ev/s, pacing out of the way). {total:,} busy samples. Raw stacks: `{res['raw']}`.",
        "",
    ]
    _profile_tables(res, out)


# ------------------------------------------------------------------------------------------------ main


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: each section's finally stops its agent and peers


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default=None, help="scan file size (default 1GiB; --quick: 100MiB)")
    ap.add_argument("--quick", action="store_true", help="fast smoke run: ~100 MiB, 1 run, short windows")
    ap.add_argument("--runs", type=int, default=None, help="runs per measurement (default 3; --quick: 1)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive pygtail peer (slowest contender)")
    ap.add_argument("--naive-runs", type=int, default=None, help="runs of the naive peer (default: --runs)")
    ap.add_argument("--backlog-events", type=int, default=None, help="default 1,000,000 (--quick: 100,000)")
    ap.add_argument("--backlog-runs", type=int, default=None, help="default: --runs")
    ap.add_argument("--backlog-drain-timeout", type=float, default=None, help="seconds (default 120; quick 60)")
    ap.add_argument("--no-diagnostics", action="store_true", help="skip the one-run diagnostic variants")
    ap.add_argument("--output", default=str(BENCH / "RESULTS.md"))
    args = ap.parse_args()

    args.runs = args.runs or (1 if args.quick else 3)
    args.naive_runs = args.naive_runs or args.runs
    args.backlog_runs = args.backlog_runs or args.runs
    size = parse_size(args.size or ("100MiB" if args.quick else "1GiB"))
    args.backlog_events = args.backlog_events or (100_000 if args.quick else 1_000_000)
    args.backlog_drain_timeout = args.backlog_drain_timeout or (60.0 if args.quick else 120.0)
    args.backlog_fill_timeout = 120.0 + args.backlog_events / 1000
    args.latency_count = 200 if args.quick else 1000
    args.latency_rate = 20.0
    args.idle_window = 20.0 if args.quick else 60.0
    args.idle_settle = 5.0 if args.quick else 10.0
    args.outbox_seconds = 1.0 if args.quick else 3.0
    args.scan_timeout = 120.0 + size / 2**20
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}")

    OUT.mkdir(parents=True, exist_ok=True)
    started = time.time()
    info = None
    if {"scan", "profile"} & set(wanted):
        log(f"generating/using the scan file ({size / 2**20:,.0f} MiB)")
        info = generate(OUT / f"scan-{size >> 20}MiB.log", size)
        log(f"scan file: {info.path} {info.lines:,} lines {info.matches:,} matches")

    mach = machine()
    cmd = "python bench/run.py " + " ".join(sys.argv[1:])
    out = [
        "# dutytail benchmark results",
        "",
        f"Generated by `{cmd.strip()}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
        f"({'quick' if args.quick else 'full'} mode, {args.runs} run(s) per measurement unless stated). "
        "Numbers are min / median / max over runs. The machine is shared (other engineers' test suites may run "
        "at the same time): see the load average.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in mach.items()],
        "",
    ]
    code0 = code_version()
    out += [f"Agent code measured: HEAD `{code0['head']}` ({code0['subject']}), uncommitted changes in agent/: "
            f"{code0['dirty']}, content hash `{code0['hash']}` (sha256 of agent/**/*.py). Each section below says "
            "if the code changed under it (others commit while the bench runs).", ""]
    raw: dict[str, Any] = {"machine": mach, "args": vars(args), "code": {"start": code0}}
    for section in wanted:
        t0 = time.time()
        before = code_version()
        mark = len(out)
        if section == "scan":
            section_scan(args, info, out, raw)
        elif section == "latency":
            section_latency(args, out, raw)
        elif section == "idle":
            section_idle(args, out, raw)
        elif section == "backlog":
            section_backlog(args, out, raw)
        elif section == "outbox":
            section_outbox(args, out, raw)
        elif section == "profile":
            section_profile(args, info, out, raw)
        after = code_version()
        raw["code"][section] = {"before": before, "after": after}
        note = ""
        if before["hash"] != after["hash"]:
            note = (f"> **Agent code changed during this section**: at its start HEAD `{before['head']}` hash "
                    f"`{before['hash']}`, at its end HEAD `{after['head']}` hash `{after['hash']}`; its runs may "
                    "have measured different code.")
        elif before["hash"] != code0["hash"]:
            note = (f"> Measured agent code: HEAD `{before['head']}` ({before['subject']}), hash `{before['hash']}` "
                    "(changed since the start of the bench).")
        if note:
            out.insert(mark + 2 if len(out) > mark + 2 else len(out), note + "\n")
            log(note)
        log(f"section {section} took {time.time() - t0:.0f}s")
        Path(args.output).write_text(with_other_sections("\n".join([*out, "(run in progress: sections so far)", ""]),
                                                         Path(args.output)))
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    out += [f"Total bench time {time.time() - started:,.0f} s; load average at the end: {load}.", ""]
    text = "\n".join(out)
    print(text)
    Path(args.output).write_text(with_other_sections(text, Path(args.output)))
    (OUT / "results.json").write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {Path(args.output).relative_to(ROOT) if Path(args.output).is_relative_to(ROOT) else args.output}")


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading line, block) for every ``## `` section of a markdown text (the preamble is not one)."""
    blocks = re.split(r"(?m)^(?=## )", text)
    return [(block.splitlines()[0], block) for block in blocks if block.startswith("## ")]


def with_other_sections(text: str, path: Path) -> str:
    """``text`` followed by the sections of the file at ``path`` that this script does not write (Fleet,
    Structured logs, Growth, Footprint, Files at scale: other benchmarks' results, pasted in by hand), so a
    run of this script replaces only its own sections."""
    try:
        existing = path.read_text()
    except OSError:
        return text
    mine = {heading for heading, _ in _sections(text)}
    kept = [block for heading, block in _sections(existing) if heading not in mine and heading not in OWN_HEADINGS]
    if not kept:
        return text
    return text.rstrip("\n") + "\n\n" + "".join(kept).rstrip("\n") + "\n"


OWN_HEADINGS = {"## 1. Scan throughput", "## 2. Alert latency", "## 3. Idle cost", "## 4. Backlog",
                "## 5. Outbox throughput (group commit)", "## Profile of the scan (py-spy)",
                "## Profile of the backlog drain (py-spy)"}
"""Headings this script writes (a run of some sections only must not keep stale copies of the others)."""


if __name__ == "__main__":
    main()
