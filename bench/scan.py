"""Section 1: scan throughput of the real agent vs grep, rsyslog imfile and a naive Python tailer."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    OUT,
    PY,
    Fake,
    LineCounter,
    agent_config,
    cpu_seconds,
    free_port,
    fresh_dir,
    hwm_mib,
    last_received_at,
    log,
    metric,
    start_agent,
    stop_process,
    warm,
)
from logdata import RULES, LogInfo, ere, rules_yaml


@dataclass
class Run:
    seconds: float  # start -> done (last event delivered / last line in the sink / exit)
    cpu: float = 0.0  # CPU seconds of the contender's process(es)
    rss: float = 0.0  # peak RSS MiB
    ok: bool = True
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def run_agent(info: LogInfo, workdir: Path, timeout: float, prefix: list[str] | None = None,
              outbox: str = "max_bytes: 8GiB", few_alerts: bool = False, endpoint_down: bool = False) -> Run:
    """Real agent from process start until the fake endpoint has every expected event.

    ``few_alerts``: the issue's scan as a user would run it: rules without identity (one alert per rule, 20
    events in all) and the agent's own defaults for pacing (Flashduty's 100/s and 1000/min), concurrency and
    storm control. "Done" is when /metrics shows every line read and every match counted by the alert engine
    (polled every 0.1 s) and the 20 events arrived.
    Otherwise every match is its own alert (9,279 events) with pacing and storm control lifted: a stress
    test of delivery at ~1,000 requests/s, ten times what one Flashduty integration accepts.
    ``endpoint_down``: nothing listens on the push URL; "done" is when /metrics shows every line read and every
    event committed to the outbox (durably queued), polled every 0.1 s. It times the agent's own work up to
    the network, without the delivery competing for the GIL and without the endpoint competing for the cores.
    The endpoint's own CPU seconds go to ``extra["endpoint_cpu"]`` (it shares the machine's cores).
    """
    wd = fresh_dir(workdir / "agent")
    fake = None if endpoint_down else Fake(free_port(), wd)
    if fake is not None:
        fake.start()
    hport = free_port()
    rules = rules_yaml(identity=not few_alerts)
    logs = f"logs:\n  - name: bench\n    paths: [{info.path}]\n    start_at: beginning\n    rules:\n{rules}"
    expected = len(RULES) if few_alerts else info.matches
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport,
                                push_port=fake.port if fake is not None else free_port(), logs_yaml=logs,
                                outbox="" if few_alerts else outbox, user_defaults=few_alerts))
    warm(info.path)
    agent = start_agent(cfg, hport, wd / "agent.log", prefix or ())
    pid = agent.pid
    if prefix:  # py-spy launched the agent: measure the child
        pid = _child(agent.pid)
    counter = LineCounter(fake.out) if fake is not None else None
    t_ready = t_read = None
    poll_metrics = few_alerts or endpoint_down
    next_poll = 0.0
    try:
        deadline = time.monotonic() + timeout
        while True:
            n = counter.poll() if counter is not None else 0
            if t_read is not None and (endpoint_down or n >= expected):
                break
            if n >= expected and not poll_metrics:
                break
            if not agent.alive():
                return Run(time.time() - agent.started, ok=False, note=f"agent exited {agent.proc.returncode}")
            if time.monotonic() > deadline:
                return Run(time.time() - agent.started, ok=False, note=f"timeout: {n}/{expected} events")
            if t_read is None and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + (0.1 if poll_metrics else 0.25)
                text = agent.metrics()
                if text and t_ready is None:
                    t_ready = time.time() - agent.started
                read = metric(text, "dutytail_lines_read_total") if text else None
                if endpoint_down:
                    done = metric(text, "dutytail_events_queued_total") if text else None
                else:
                    done = metric(text, "dutytail_rule_matches_total") if text else None
                if read is not None and read >= info.lines and (done or 0) >= info.matches:
                    t_read = time.time() - agent.started
            time.sleep(0.02)
        if fake is not None:
            t_end = last_received_at(fake.out)
            if few_alerts and t_read is not None:
                t_end = max(t_end, agent.started + t_read)
        else:
            assert t_read is not None
            t_end = agent.started + t_read
        cpu = cpu_seconds(pid)
        rss = hwm_mib(pid)
        seconds = t_end - agent.started
        extra = {"ready_s": t_ready or float("nan"), "read_s": t_read or float("nan")}
        if fake is not None and fake.proc is not None:
            extra["endpoint_cpu"] = cpu_seconds(fake.proc.pid)
        return Run(seconds, cpu, rss, extra=extra)
    finally:
        if counter is not None:
            counter.close()
        if prefix:
            with _suppress():
                import os
                import signal

                os.kill(pid, signal.SIGTERM)
            agent.proc.wait(60)
        else:
            agent.stop()
        if fake is not None:
            fake.stop()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _child(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            kids = []
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    raise RuntimeError("py-spy did not start the agent")


def run_grep(info: LogInfo, workdir: Path) -> Run:
    pat = workdir / "patterns.ere"
    pat.write_text("".join(ere(p) + "\n" for _, p, _ in RULES))
    warm(info.path)
    t0 = time.perf_counter()
    proc = subprocess.run(["grep", "-E", "-c", "-f", str(pat), str(info.path)], capture_output=True, text=True,
                          env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - t0
    count = int(proc.stdout.strip() or -1)
    ok = count == info.matches
    return Run(seconds, ok=ok, note="" if ok else f"grep counted {count}, expected {info.matches}")


RSYSLOG_CONF = """\
global(workDirectory="{work}" parser.escapeControlCharactersOnReceive="off" maxMessageSize="64k")
module(load="imfile" mode="inotify")
template(name="raw" type="string" string="%msg%\\n")
ruleset(name="bench") {{
  action(type="omfile" file="{sink}" template="raw" asyncWriting="on" ioBufferSize="1m" flushInterval="1")
}}
input(type="imfile" file="{log}" tag="bench" ruleset="bench" freshStartTail="off")
"""


def run_rsyslog(info: LogInfo, workdir: Path, timeout: float) -> Run:
    exe = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
    if exe is None:
        return Run(float("nan"), ok=False, note="skipped: rsyslogd not installed (apt-get install -y rsyslog)")
    wd = fresh_dir(workdir / "rsyslog")
    (wd / "work").mkdir()
    sink = wd / "sink.log"
    conf = wd / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=wd / "work", sink=sink, log=info.path))
    warm(info.path)
    err = open(wd / "rsyslogd.out", "wb")
    t0 = time.time()
    proc = subprocess.Popen([exe, "-n", "-f", str(conf), "-i", str(wd / "rsyslogd.pid")], stdout=err, stderr=err)
    counter = LineCounter(sink)
    try:
        deadline = time.monotonic() + timeout
        while counter.poll() < info.lines:
            if proc.poll() is not None:
                why = (wd / "rsyslogd.out").read_text()[:200]
                return Run(time.time() - t0, ok=False, note=f"rsyslogd exited: {why}")
            if time.monotonic() > deadline:
                return Run(time.time() - t0, ok=False, note=f"timeout: {counter.lines}/{info.lines} lines in sink")
            time.sleep(0.02)
        seconds = time.time() - t0
        cpu = cpu_seconds(proc.pid)
        rss = hwm_mib(proc.pid)
        return Run(seconds, cpu, rss)
    finally:
        counter.close()
        stop_process(proc, 10)
        err.close()
        shutil.rmtree(wd, ignore_errors=True)


def run_naive(info: LogInfo, workdir: Path, timeout: float) -> Run:
    try:
        import pygtail  # noqa: F401
    except ImportError:
        return Run(float("nan"), ok=False, note="skipped: pygtail not installed (.venv/bin/pip install pygtail)")
    wd = fresh_dir(workdir / "naive")
    warm(info.path)
    t0 = time.time()
    try:
        proc = subprocess.run([PY, str(Path(__file__).with_name("naive_tailer.py")), str(info.path),
                               str(wd / "offset")], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Run(time.time() - t0, ok=False, note=f"timeout after {timeout:.0f}s")
    seconds = time.time() - t0
    try:
        res = json.loads(proc.stdout)
    except ValueError:
        return Run(seconds, ok=False, note=f"failed: {proc.stderr[-200:]}")
    ok = res["matches"] == info.matches and res["lines"] == info.lines
    note = "" if ok else f"counted {res['lines']} lines / {res['matches']} matches"
    return Run(seconds, res["cpu"], res["rss"], ok=ok, note=note)


def bench_scan(info: LogInfo, runs: int, naive: bool, log_timeout: float, naive_runs: int) -> dict[str, list[Run]]:
    workdir = fresh_dir(OUT / "scan")
    results: dict[str, list[Run]] = {"agent": [], "agent_few": [], "agent_queued": [], "grep": [], "rsyslog": [],
                                     "naive": []}
    for i in range(runs):
        log(f"scan run {i + 1}/{runs}: grep")
        results["grep"].append(run_grep(info, workdir))
        log(f"scan run {i + 1}/{runs}: agent, one alert per rule, user defaults")
        results["agent_few"].append(run_agent(info, workdir, log_timeout, few_alerts=True))
        log(f"  agent few alerts: {results['agent_few'][-1]}")
        log(f"scan run {i + 1}/{runs}: agent, every match its own alert (stress; diagnostic)")
        results["agent"].append(run_agent(info, workdir, log_timeout))
        log(f"  agent: {results['agent'][-1]}")
        log(f"scan run {i + 1}/{runs}: agent, endpoint down (every event queued; diagnostic)")
        results["agent_queued"].append(run_agent(info, workdir, log_timeout, endpoint_down=True))
        log(f"  agent endpoint down: {results['agent_queued'][-1]}")
        log(f"scan run {i + 1}/{runs}: rsyslog")
        results["rsyslog"].append(run_rsyslog(info, workdir, log_timeout))
        log(f"  rsyslog: {results['rsyslog'][-1]}")
        if naive and i < naive_runs:
            log(f"scan run {i + 1}/{runs}: naive pygtail + re")
            results["naive"].append(run_naive(info, workdir, log_timeout * 4))
            log(f"  naive: {results['naive'][-1]}")
    return results
