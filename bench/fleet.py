"""A fleet on one integration: N agent processes, each its own host, state and log, push a correlated burst
to one fake Flashduty integration that enforces Flashduty's limits (100 requests/s and 1,000/min, sliding
windows) and answers 429 beyond them.

Every agent runs with the agent's own delivery defaults (pacing at the integration's limits, concurrency 4,
retry_initial 1 s, retry_max 60 s), as a user who sets none of them would: each agent alone is within the
limits, the fleet together is not. The burst: every agent's log gets E lines at the same moment, each line
its own identity (its own alert, its own event, its own POST). Measured: drain time (burst written -> last
event accepted), the ideal for the integration's limits alone, 429 answers, lost and duplicated events
(by host and id), and accepted requests and 429s per second (plotted by ``--plot``). Before the burst each
agent sends one warm-up event and the bench waits 61 s for the integration's minute to slide clear (50
first sends at once would cost ~10 s of imports on 2 cores, an artefact of one machine).

    .venv/bin/python bench/fleet.py --label after               # 20x75 and 50x40 (~3.5 min each)
    .venv/bin/python bench/fleet.py --scenarios 5x40 --per-minute 200 --label smoke
    .venv/bin/python bench/fleet.py --plot bench/fleet.png --plot-labels before,after

Each run writes ``bench/out/fleet/<label>-<N>x<E>.json`` (summary plus per-second series); ``--plot`` draws
the runs found there into one PNG (matplotlib: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from backlog import _left_in_outbox
from common import (
    KEY,
    OUT,
    ROOT,
    AgentProc,
    agent_config,
    code_version,
    free_port,
    fresh_dir,
    log,
    push_url,
    start_agent,
)

sys.path.insert(0, str(ROOT))

from agent.cli import run_async
from tests.fake_flashduty import FakeFlashduty, ideal_drain

RULE = "incident"
RESULTS_DIR = OUT / "fleet"
SAMPLE = 0.05  # seconds between samples of the fake's 429 counter


# ------------------------------------------------------------------------------------------------- the ideal


def describe_ideal(n: int, per_second: int, per_minute: int) -> str:
    first = min(n, per_minute)
    rest = n - first
    text = f"{first:,} in 0-{(first - 1) // per_second} s at {per_second}/s"
    if rest:
        text += f", the other {rest:,} from 60 s on as the window slides"
    return f"{text}: last accepted at {ideal_drain(n, per_second, per_minute):.1f} s"


# ------------------------------------------------------------------------------------------------- agents


LOGS = """\
logs:
  - name: app
    paths: [{logdir}/*.log]
    start_at: beginning
    rules:
      - name: incident
        match: 'incident: upstream (?P<upstream>\\w+) unreachable id=(?P<id>\\d+)'
        identity: [id]
        severity: Critical
        title: "{{{{host}}}}: upstream {{{{upstream}}}} unreachable ({{{{id}}}})"
      - name: warmup
        match: 'warmup id=(?P<id>\\d+)'
        identity: [id]
        severity: Info
"""


def fleet_config(state_dir: Path, health_port: int, push_port: int, host: str, logdir: Path,
                 delivery: str = "") -> str:
    """The bench's agent config with the agent's own defaults for pacing, concurrency, retries and storm
    control; its own host name; extra ``flashduty:`` keys in ``delivery`` (indented two spaces)."""
    text = agent_config(state_dir=state_dir, health_port=health_port, push_port=push_port,
                        logs_yaml=LOGS.format(logdir=logdir), user_defaults=True, resolve_after="1d")
    text = text.replace("host: bench-host\n", f"host: {host}\n", 1)
    if delivery:
        marker = f"  push_url: {push_url(push_port)}\n"
        text = text.replace(marker, marker + delivery, 1)
    return text


def burst_lines(host: str, count: int) -> str:
    return "".join(f"2026-11-27T08:00:00Z {host} app[71]: incident: upstream db unreachable id={i}\n"
                   for i in range(count))


def stop_all(agents: list[AgentProc], timeout: float = 30.0) -> list[int | None]:
    """SIGTERM every agent we started (by pid), then wait for each."""
    for agent in agents:
        if agent.alive():
            agent.proc.send_signal(signal.SIGTERM)
    codes = []
    deadline = time.monotonic() + timeout
    for agent in agents:
        try:
            codes.append(agent.proc.wait(max(0.1, deadline - time.monotonic())))
        except Exception:  # anything: kill it, by pid
            agent.proc.kill()
            codes.append(agent.proc.wait(5))
    return codes


# ------------------------------------------------------------------------------------------------- one run


async def run_fleet(n_agents: int, events: int, *, label: str, per_second: int, per_minute: int,
                    timeout: float | None = None, delivery: str = "", warmup: bool = True) -> dict[str, Any]:
    wd = fresh_dir(RESULTS_DIR / f"{label}-{n_agents}x{events}")
    total = n_agents * events
    ideal = ideal_drain(total, per_second, per_minute)
    timeout = timeout or max(240.0, 4 * ideal)
    accepted: list[tuple[float, str, str, str]] = []  # (received_at, host, rule, id)
    expected = {(f"fleet-{a:03d}", str(i)) for a in range(n_agents) for i in range(events)}
    got: Counter[tuple[str, str]] = Counter()
    done = asyncio.Event()

    def on_event(rec: dict[str, Any]) -> None:
        labels = rec["event"].get("labels", {})
        item = (labels.get("host", ""), labels.get("rule", ""), labels.get("id", ""))
        accepted.append((rec["received_at"], *item))
        if item[1] == RULE:
            got[(item[0], item[2])] += 1
            if len(got) >= total and expected.issubset(got):
                done.set()


    fake = FakeFlashduty(integration_key=KEY, per_second=per_second, per_minute=per_minute, history=False,
                         on_event=on_event)
    await fake.start()
    agents: list[AgentProc] = []
    logs: list[Path] = []
    samples: list[tuple[float, int, int]] = []  # (time, requests, 429s)
    try:
        for a in range(n_agents):
            host = f"fleet-{a:03d}"
            adir = wd / host
            (adir / "logs").mkdir(parents=True)
            logfile = adir / "logs" / "app.log"
            logfile.touch()
            hport = free_port()
            cfg = adir / "config.yaml"
            cfg.write_text(fleet_config(adir / "state", hport, fake.port, host, adir / "logs", delivery))
            agents.append(start_agent(cfg, hport, adir / "agent.log"))
            logs.append(logfile)
        started = time.monotonic()
        for agent in agents:
            await asyncio.to_thread(agent.wait_ready, 300.0)
        log(f"  {n_agents} agents ready after {time.monotonic() - started:.1f}s; "
            f"RSS {sum(_rss(a.pid) for a in agents):,.0f} MiB in all")
        await asyncio.sleep(2.0)  # let every tailer settle on its file
        if warmup:
            # One event per agent first, so that each has sent once (aiohttp imported, connection open) before
            # the incident: 50 first sends at once cost ~10 s of CPU on 2 cores, an artefact of one machine.
            # Then wait until the integration's 60 s window has let them go (resetting the fake's windows
            # instead would leave the agents knowing of accepted requests the integration forgot).
            for path in logs:
                with open(path, "a") as fh:
                    fh.write("warmup id=0\n")
            await fake.wait_until(lambda: fake.accepted_count >= n_agents, 120)
            warm_done = max(r[0] for r in accepted)
            log(f"  warm-up events accepted; waiting {warm_done + 61 - time.time():.0f}s for the minute to slide")
            await asyncio.sleep(max(0.0, warm_done + 61 - time.time()))
        before = fake.accepted_count
        # the correlated incident: every agent's burst at the same moment
        bodies = [burst_lines(f"fleet-{a:03d}", events).encode() for a in range(n_agents)]
        t0 = time.time()
        for path, body in zip(logs, bodies, strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, body)
            os.close(fd)
        written_in = time.time() - t0
        sampler = asyncio.create_task(_sample(fake, samples))
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        except TimeoutError:
            log(f"  timed out after {timeout:.0f}s: {len(got)}/{total} delivered")
        t_end = time.time()
        await asyncio.sleep(3.0)  # late duplicates, if any, arrive too
        sampler.cancel()
        alive = [a.alive() for a in agents]
        codes = await asyncio.to_thread(stop_all, agents)
    finally:
        stop_all(agents, 10)
        await fake.stop()
    left: set[tuple[str, str]] = set()
    for a in range(n_agents):
        left |= {(f"fleet-{a:03d}", k) for k, _ in _left_in_outbox(wd / f"fleet-{a:03d}" / "state" / "outbox.db")}
    ours = [r for r in accepted if r[2] == RULE]
    last = max((r[0] for r in ours), default=float("nan"))
    delivered = set(got) & expected
    per_agent_done = [max(r[0] for r in ours if r[1] == f"fleet-{a:03d}") - t0
                      for a in range(n_agents) if any(r[1] == f"fleet-{a:03d}" for r in ours)]
    horizon = int(max(t_end, last if last == last else t_end) - t0) + 4
    acc_series = [0] * horizon
    for r in accepted:
        sec = int(r[0] - t0)
        if 0 <= sec < horizon:
            acc_series[sec] += 1
    rl_series = [0] * horizon
    prev = None
    for t, _, rl in samples:
        if prev is not None:
            sec = int(t - t0)
            if 0 <= sec < horizon:
                rl_series[sec] += rl - prev
        prev = rl
    drain = last - t0
    result = {
        "label": label,
        "agents": n_agents,
        "events_per_agent": events,
        "events": total,
        "per_second": per_second,
        "per_minute": per_minute,
        "delivery": delivery.strip(),
        "delivered": len(delivered),
        "lost": len(expected - delivered - left),
        "left_in_outbox": len(left - delivered),
        "duplicates": sum(got.values()) - len(got),
        "other_events": sum(1 for r in accepted if r[2] != RULE) - before,
        "warmup": warmup,
        "drain_s": drain,
        "ideal_s": ideal,
        "ideal_text": describe_ideal(total, per_second, per_minute),
        "ratio": drain / ideal if ideal else float("nan"),
        "http_429": fake.rate_limited,
        "requests": fake.request_count,
        "peak_429_per_s": max(rl_series, default=0),
        "agent_done_s": [min(per_agent_done), statistics.median(per_agent_done), max(per_agent_done)]
        if per_agent_done else [],
        "burst_written_in_s": written_in,
        "burst_at": t0,
        "agents_alive_at_end": sum(alive),
        "exit_codes": dict(Counter(str(c) for c in codes)),
        "accepted_per_s": acc_series,
        "http_429_per_s": rl_series,
        "code": code_version(),
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    (RESULTS_DIR / f"{label}-{n_agents}x{events}.json").write_text(json.dumps(result, indent=1))
    return result


async def _sample(fake: FakeFlashduty, samples: list[tuple[float, int, int]]) -> None:
    while True:
        samples.append((time.time(), fake.request_count, fake.rate_limited))
        await asyncio.sleep(SAMPLE)


def _rss(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ------------------------------------------------------------------------------------------------- report


def row(r: dict[str, Any]) -> str:
    done = r["agent_done_s"]
    spread = f"{done[0]:.1f} / {done[1]:.1f} / {done[2]:.1f}" if done else "-"
    return (f"| {r['label']} | {r['agents']} x {r['events_per_agent']} = {r['events']:,} | {r['drain_s']:.1f} | "
            f"{r['ideal_s']:.1f} | {r['ratio']:.2f} | {r['http_429']:,} | {r['peak_429_per_s']} | "
            f"{r['lost']} | {r['duplicates']} | {spread} |")


HEADER = ("| sender | agents x events | drain s | ideal s | ratio | 429s | peak 429/s | lost | duplicates | "
          "agents done s (min / median / max) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---|")


# ------------------------------------------------------------------------------------------------- plot


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """One panel per run: accepted requests per second (green, up), 429 answers per second (red, down), the
    ideal drain (blue dashes) and the measured drain (black dashes). Needs matplotlib (``pip install -e
    .[bench]``)."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: .venv/bin/pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = int(max(max(len(r["accepted_per_s"]), r["ideal_s"] * 1.3 + 2) for r in results)) + 1
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 2.6 * len(results)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        xs = range(len(r["accepted_per_s"]))
        ax.bar(xs, r["accepted_per_s"], width=0.8, color="tab:green", label="accepted / s")
        ax.bar(range(len(r["http_429_per_s"])), [-v for v in r["http_429_per_s"]], width=0.8, color="tab:red",
               label="429 / s")
        ax.axvline(r["ideal_s"], color="tab:blue", linestyle="--", label="ideal drain")
        ax.axvline(r["drain_s"], color="black", linestyle="--", label="measured drain")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xlim(0, seconds)
        ax.set_title(f"{r['label']}: {r['agents']} agents x {r['events_per_agent']} events - drain "
                     f"{r['drain_s']:.1f} s, ideal {r['ideal_s']:.1f} s (ratio {r['ratio']:.2f}), "
                     f"{r['http_429']:,} 429s, lost {r['lost']}", fontsize=9, loc="left")
        ax.set_ylabel("requests / s")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds after the burst")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="20x75,50x40", help="AGENTSxEVENTS, comma-separated")
    parser.add_argument("--label", default="run", help="names the runs' JSON files (e.g. before, after)")
    parser.add_argument("--per-second", type=int, default=100, help="the fake integration's limit per second")
    parser.add_argument("--per-minute", type=int, default=1000, help="the fake integration's limit per minute")
    parser.add_argument("--delivery", default="", help="extra flashduty: settings, e.g. 'retry_max: 5s'")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the drain")
    parser.add_argument("--plot", type=Path, help="draw the stored runs into this PNG")
    parser.add_argument("--plot-labels", default="", help="labels to plot, in order (default: this run's)")
    parser.add_argument("--no-run", action="store_true", help="only plot the stored runs")
    parser.add_argument("--no-warmup", action="store_true", help="no warm-up event per agent before the burst")
    args = parser.parse_args()
    results = []
    if not args.no_run:
        for spec in args.scenarios.split(","):
            n, e = (int(x) for x in spec.lower().split("x"))
            total = n * e
            ideal = describe_ideal(total, args.per_second, args.per_minute)
            log(f"fleet {n} agents x {e} events = {total:,}; ideal: {ideal}")
            delivery = "".join(f"  {item.strip()}\n" for item in args.delivery.split(",") if item.strip())
            res = run_async(run_fleet(n, e, label=args.label, per_second=args.per_second,
                                      per_minute=args.per_minute, timeout=args.timeout, delivery=delivery,
                                      warmup=not args.no_warmup))
            results.append(res)
            log("  " + json.dumps({k: v for k, v in res.items() if not k.endswith("_per_s") and k != "code"}))
        print(HEADER)
        for res in results:
            print(row(res))
    if args.plot:
        labels = [x for x in args.plot_labels.split(",") if x] or [args.label]
        stored = []
        for spec in args.scenarios.split(","):
            for lab in labels:
                f = RESULTS_DIR / f"{lab}-{spec.lower()}.json"
                if f.exists():
                    stored.append(json.loads(f.read_text()))
        plot(stored, args.plot)
        log(f"plot of {len(stored)} run(s) written to {args.plot}")


if __name__ == "__main__":
    main()
