"""Growth: what the agent costs as a host grows, so a user can read the cost of their own host off a table.

    .venv/bin/python bench/growth.py                      # rules 20/200/1,000, scan vs grep, line rates
    .venv/bin/python bench/growth.py --quick              # smaller file, shorter windows, 1 run
    .venv/bin/python bench/growth.py --sections rules     # one section
    .venv/bin/python bench/growth.py --plot bench/growth.png   # the last run's numbers as a plot

Rules: the agent with 20 (the scan benchmark's), 200 or 1,000 rules (the 20 plus rules of the same shape
that never match) on one source: the time to ready on the first start (nothing cached) and on a restart
(the compiled databases cached in state_dir), and a generated log (bench/logdata.py, 0.1% matching,
ending with a match) appearing in the watched directory: seconds from its appearance to its last line's
event at a local endpoint, lines/s, CPU seconds and peak RSS.

Line rate: 100 files under one source with the 20 rules; lines that match nothing appended round-robin at
0, 1,000 and 100,000 lines/s for a window: the agent's CPU (% of one core) and RSS.

Files (1k/10k/100k) are bench/files_scale.py's. Prints markdown; raw numbers to bench/out/growth.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    OUT,
    SETTLE_AFTER_READY,
    Fake,
    LineCounter,
    agent_config,
    cpu_seconds,
    fmt_mmm,
    free_port,
    fresh_dir,
    hwm_mib,
    log,
    metric,
    mmm,
    rss_mib,
    start_agent,
    warm,
)
from logdata import RULES, _normal_line, ere, generate, parse_size, rules_yaml


def rules_of(count: int) -> str:
    """``count`` rules: the 20 real ones, then rules of the same shape that never match (one alert per rule)."""
    text = rules_yaml(identity=False)
    for i in range(count - len(RULES)):
        text += (f"      - name: synthetic-{i}\n"
                 f"        match: 'component-{i} (?:failed|crashed): (?P<id>\\w+) code={1000 + i}'\n")
    return text


def _source(logdir: Path, rules: str) -> str:
    return f"logs:\n  - name: growth\n    paths: [{logdir}/*.log]\n    start_at: beginning\n    rules:\n{rules}"


# ------------------------------------------------------------------------------------------------ rules


def _scan(agent: Any, counter: LineCounter, logdir: Path, data: Any) -> dict[str, float]:
    """Hard-link ``data`` into the watched directory (the whole file appears at once), ``SETTLE_AFTER_READY``
    after ready, and time it to its end.

    One alert per rule: the last line's match joins an alert already open, so "done" is every matching line
    counted by the alert engine (after its batch was matched) and every rule's event delivered.
    """
    time.sleep(SETTLE_AFTER_READY)
    c0 = cpu_seconds(agent.pid)
    appeared = time.monotonic()
    os.link(data.path, logdir / "big.log")
    deadline = appeared + 600
    while time.monotonic() < deadline:
        matched = metric(agent.metrics(), "dutytail_rule_matches_total") or 0
        if matched >= data.matches and counter.poll() >= len(RULES):
            break
        time.sleep(0.01)
    out = {"scan_s": time.monotonic() - appeared}
    out["lines_per_s"] = data.lines / out["scan_s"]
    out["cpu_s"] = cpu_seconds(agent.pid) - c0
    out["rss_mib"] = rss_mib(agent.pid)
    out["hwm_mib"] = hwm_mib(agent.pid)
    return out


def _rules_run(workdir: Path, count: int, data: Any, restart: bool = True) -> dict[str, float]:
    wd = fresh_dir(workdir / f"rules-{count}")
    logdir = wd / "logs"
    logdir.mkdir()
    fake = Fake(free_port(), wd)
    fake.start()
    hport = free_port()
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=fake.port,
                                logs_yaml=_source(logdir, rules_of(count)), user_defaults=True))
    out: dict[str, float] = {}
    try:
        agent = start_agent(cfg, hport, wd / "agent.log")
        out["ready_first_s"] = agent.wait_ready(120)
        if restart:
            agent.stop()
            agent = start_agent(cfg, hport, wd / "agent.log")
            out["ready_restart_s"] = agent.wait_ready(120)
        counter = LineCounter(fake.out)
        warm(data.path)
        out.update(_scan(agent, counter, logdir, data))
        counter.close()
        agent.stop()
    finally:
        fake.stop()
    return out


def bench_rules(workdir: Path, counts: list[int], runs: int, size: int) -> dict[int, list[dict[str, float]]]:
    data = generate(OUT / "growth.log", size)
    results: dict[int, list[dict[str, float]]] = {}
    for count in counts:
        for run in range(runs):
            log(f"rules {count}, run {run + 1}/{runs}")
            results.setdefault(count, []).append(_rules_run(workdir, count, data))
            log(f"  {results[count][-1]}")
    return results


# ------------------------------------------------------------------------------------------------ scan vs grep


def _grep(data: Any, workdir: Path) -> dict[str, float]:
    pat = workdir / "patterns.ere"
    pat.write_text("".join(ere(p) + "\n" for _, p, _ in RULES))
    warm(data.path)
    c0 = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(["grep", "-E", "-c", "-f", str(pat), str(data.path)], capture_output=True, text=True,
                          env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, check=False)
    seconds = time.perf_counter() - t0
    c1 = os.times()
    if int(proc.stdout.strip() or -1) != data.matches:
        raise RuntimeError(f"grep counted {proc.stdout.strip()}, expected {data.matches}")
    return {"scan_s": seconds, "lines_per_s": data.lines / seconds,
            "cpu_s": (c1.children_user + c1.children_system) - (c0.children_user + c0.children_system)}


def bench_scan(workdir: Path, runs: int, size: int, fraction: float) -> dict[str, list[dict[str, float]]]:
    """The agent (already running, 20 rules) vs ``grep -E -c -f`` on the same file, alternating run by run."""
    data = generate(OUT / f"growth-scan-{fraction:g}.log", size, match_fraction=fraction)
    results: dict[str, list[dict[str, float]]] = {"agent": [], "grep": []}
    fresh_dir(workdir / "grep")
    for run in range(runs):
        log(f"scan run {run + 1}/{runs}: grep")
        results["grep"].append(_grep(data, workdir / "grep"))
        log(f"  {results['grep'][-1]}")
        log(f"scan run {run + 1}/{runs}: agent")
        results["agent"].append(_rules_run(workdir, len(RULES), data, restart=False))
        log(f"  {results['agent'][-1]}")
    results["info"] = [{"lines": float(data.lines), "matches": float(data.matches), "bytes": float(size)}]
    return results


# ------------------------------------------------------------------------------------------------ line rate


class Writer(threading.Thread):
    """Appends ``rate`` lines/s round-robin over ``paths`` in 10 ms steps (lines that match no rule)."""

    def __init__(self, paths: list[Path], rate: int) -> None:
        super().__init__(daemon=True)
        self.paths, self.rate = paths, rate
        self.stop_at = 0.0
        self.written = 0
        rnd = random.Random(3)
        pool: list[str] = []
        while len(pool) < 2000:
            unit: list[str] = []
            _normal_line(rnd, len(pool), unit)
            pool.extend(u for u in unit if "Exception" not in u and "\tat " not in u)
        self.pool = pool

    def run(self) -> None:
        handles = [open(p, "a", buffering=1 << 16) for p in self.paths]
        start = time.monotonic()
        step, k = 0.01, 0
        try:
            while time.monotonic() < self.stop_at:
                due = int((time.monotonic() - start) * self.rate)
                while self.written < due:
                    h = handles[k % len(handles)]
                    h.write(self.pool[self.written % len(self.pool)] + "\n")
                    self.written += 1
                    k += 1
                for h in handles:
                    h.flush()
                time.sleep(step)
        finally:
            for h in handles:
                h.close()


def _rate_run(workdir: Path, rate: int, window: float, settle: float, files: int) -> dict[str, float]:
    wd = fresh_dir(workdir / f"rate-{rate}")
    logdir = wd / "logs"
    logdir.mkdir()
    paths = [logdir / f"svc-{i:03d}.log" for i in range(files)]
    for p in paths:
        p.write_text("")
    hport = free_port()
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=free_port(),
                                logs_yaml=_source(logdir, rules_yaml(identity=False)), user_defaults=True))
    agent = start_agent(cfg, hport, wd / "agent.log")
    try:
        agent.wait_ready(60)
        writer = Writer(paths, rate)
        writer.stop_at = time.monotonic() + settle + window + 1
        if rate:
            writer.start()
        time.sleep(settle)
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        read = metric(agent.metrics(), "dutytail_lines_read_total") or 0
        out = {"cpu_pct": (c1 - c0) / (t1 - t0) * 100, "rss_mib": rss_mib(agent.pid), "hwm_mib": hwm_mib(agent.pid),
               "written": float(writer.written), "read": read}
        if rate:
            writer.join(10)
        return out
    finally:
        agent.stop()


def bench_rates(workdir: Path, rates: list[int], runs: int, window: float, settle: float,
                files: int) -> dict[int, list[dict[str, float]]]:
    results: dict[int, list[dict[str, float]]] = {}
    for rate in rates:
        for run in range(runs):
            log(f"line rate {rate}/s, run {run + 1}/{runs}")
            results.setdefault(rate, []).append(_rate_run(workdir, rate, window, settle, files))
            log(f"  {results[rate][-1]}")
    return results


# ------------------------------------------------------------------------------------------------ report


def _col(rows: list[dict[str, float]], key: str, fmt: str = "{:,.2f}") -> str:
    return fmt_mmm([r[key] for r in rows], fmt)


def plot(raw: dict[str, Any], target: Path) -> None:
    """Cost vs size from growth.json: rules against restart time and scan rate, line rate against CPU."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: .venv/bin/pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(rows: dict[str, list[dict[str, float]]], key: str) -> tuple[list[float], list[float], list[list[float]]]:
        xs, med, err = [], [], [[], []]
        for x, runs in sorted(rows.items(), key=lambda kv: float(kv[0])):
            lo, mid, hi = mmm([r[key] for r in runs])
            xs.append(max(float(x), 1.0))  # the idle row (0 lines/s) sits at 1 on a log axis
            med.append(mid)
            err[0].append(mid - lo)
            err[1].append(hi - mid)
        return xs, med, err

    panels = [("rules", "ready_restart_s", "rules", "ready on a restart, s", 1.0),
              ("rules", "lines_per_s", "rules", "scan, lines/s (100 MiB, 0.1% matching)", 2_000_000.0),
              ("rates", "cpu_pct", "lines/s appended (100 files; idle at 1)", "CPU, % of a core", None),
              ("rates", "rss_mib", "lines/s appended (100 files; idle at 1)", "RSS, MiB", None)]
    present = [p for p in panels if p[0] in raw]
    fig, axes = plt.subplots(1, len(present), figsize=(4 * len(present), 3.6), squeeze=False)
    for ax, (section, key, xlabel, title, target_value) in zip(axes[0], present, strict=True):
        xs, med, err = series(raw[section], key)
        ax.errorbar(xs, med, yerr=err, marker="o", capsize=3)
        if target_value is not None:
            ax.axhline(target_value, color="red", linestyle=":", linewidth=1, label="target")
            ax.legend()
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("dutytail: cost vs rules and line rate (median, bars min-max of runs; 2 cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="rules,scan,rates")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", default="100MiB", help="scan file for the rules rows")
    parser.add_argument("--rules", default="20,200,1000")
    parser.add_argument("--rates", default="0,1000,100000")
    parser.add_argument("--files", type=int, default=100, help="files the line-rate rows append to")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--scan-size", default="200MiB", help="file for the scan-vs-grep rows")
    parser.add_argument("--scan-fraction", type=float, default=0.005, help="matching lines in it")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plot", type=Path, help="draw bench/out/growth.json (the last run) to this PNG; no run")
    args = parser.parse_args()
    if args.plot:
        plot(json.loads((OUT / "growth.json").read_text()), args.plot)
        return
    if args.quick:
        args.runs, args.size, args.scan_size, args.window, args.settle = 1, "20MiB", "20MiB", 8.0, 2.0
    workdir = OUT / "growth"
    sections = set(args.sections.split(","))
    raw: dict[str, Any] = {}
    out = ["## Growth: rules and line rate", "",
           f"Command: `.venv/bin/python bench/growth.py {' '.join(sys.argv[1:])}`; min / median / max of "
           f"{args.runs} run(s).", ""]
    if "rules" in sections:
        counts = [int(x) for x in args.rules.split(",")]
        res = bench_rules(workdir, counts, args.runs, parse_size(args.size))
        raw["rules"] = res
        out += [f"Rules on one source; a {args.size} log (0.1% matching) appearing in the watched directory.", "",
                "| rules | ready, first start (s) | ready, restart (s) | scan (s) | lines/s | CPU (s) | "
                "peak RSS (MiB) |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for count, rows in res.items():
            out.append(f"| {count:,} | {_col(rows, 'ready_first_s')} | {_col(rows, 'ready_restart_s')} | "
                       f"{_col(rows, 'scan_s')} | {_col(rows, 'lines_per_s', '{:,.0f}')} | {_col(rows, 'cpu_s')} | "
                       f"{_col(rows, 'hwm_mib', '{:,.1f}')} |")
        out.append("")
    if "scan" in sections:
        res_s = bench_scan(workdir, args.runs, parse_size(args.scan_size), args.scan_fraction)
        raw["scan"] = res_s
        info = res_s["info"][0]
        ratios = [a["scan_s"] / g["scan_s"] for a, g in zip(res_s["agent"], res_s["grep"], strict=True)]
        out += [f"A {args.scan_size} mixed log ({info['lines']:,.0f} lines, {info['matches']:,.0f} matching = "
                f"{args.scan_fraction:.1%}; 20 rules, one alert per rule) appearing in the watched directory of a "
                "running agent: from its appearance until every match is counted and every rule's event is at the "
                "local endpoint; `LC_ALL=C grep -E -c -f` on the same file (page cache warm), alternating run by run.",
                "", "| contender | seconds | lines/s | CPU (s) | peak RSS (MiB) |", "|---|---:|---:|---:|---:|",
                f"| dutytail | {_col(res_s['agent'], 'scan_s')} | {_col(res_s['agent'], 'lines_per_s', '{:,.0f}')} | "
                f"{_col(res_s['agent'], 'cpu_s')} | {_col(res_s['agent'], 'hwm_mib', '{:,.1f}')} |",
                f"| grep | {_col(res_s['grep'], 'scan_s')} | {_col(res_s['grep'], 'lines_per_s', '{:,.0f}')} | "
                f"{_col(res_s['grep'], 'cpu_s')} | |", "",
                f"Agent time / grep time, per run pair: {fmt_mmm(ratios, '{:.2f}x')}.", ""]
    if "rates" in sections:
        rates = [int(x) for x in args.rates.split(",")]
        res_r = bench_rates(workdir, rates, args.runs, args.window, args.settle, args.files)
        raw["rates"] = res_r
        out += [f"Lines that match nothing appended round-robin to {args.files} files, 20 rules; "
                f"{args.window:g} s window after {args.settle:g} s.", "",
                "| lines/s | CPU, % of a core | RSS (MiB) | peak RSS (MiB) |", "|---:|---:|---:|---:|"]
        for rate, rows in res_r.items():
            out.append(f"| {rate:,} | {_col(rows, 'cpu_pct')} | {_col(rows, 'rss_mib', '{:,.1f}')} | "
                       f"{_col(rows, 'hwm_mib', '{:,.1f}')} |")
        out.append("")
    text = "\n".join(out)
    print(text)
    (OUT / "growth.json").write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
