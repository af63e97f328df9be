"""Section 3: idle cost: 2,000 watched idle files and 20 cheap checks, CPU % and RSS over a window."""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path
from typing import Any

from common import (
    Fake,
    LineCounter,
    agent_config,
    cpu_seconds,
    free_port,
    fresh_dir,
    log,
    open_fds,
    proc_status,
    start_agent,
)
from logdata import _rare_line, rules_yaml


class _Listener:
    """A local TCP port for the tcp probes: accepts and closes connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def write_workload(logdir: Path, files: int, listener_port: int) -> str:
    """This benchmark's workload: ``files`` idle logs written in ``logdir`` (created), and the YAML of its 20
    checks (10 ``file_age`` on those logs, 10 ``tcp`` to the listener; intervals 10 s..28 s)."""
    logdir.mkdir()
    for i in range(files):
        (logdir / f"svc-{i:04d}.log").write_text(f"2026-11-27 08:00:00 INFO service {i} started\n")
    checks = ["checks:"]
    for i in range(10):
        checks.append(f"  - name: backup-age-{i}\n    file_age: {{path: {logdir}/svc-{i:04d}.log, max_age: 1h}}\n"
                      f"    interval: {10 + 2 * i}s")
        checks.append(f"  - name: port-{i}\n    tcp: {{host: 127.0.0.1, port: {listener_port}}}\n"
                      f"    interval: {10 + 2 * i}s")
    return "\n".join(checks) + "\n"


def _one(workdir: Path, files: int, window: float, settle: float, tail_opts: str = "",
         with_checks: bool = True, fire: bool = False) -> dict[str, Any]:
    """``fire``: before measuring, one matching line is appended and its event delivered to a local fake
    (the HTTP client is loaded from then on: the RSS of an agent that has alerted once)."""
    wd = fresh_dir(workdir)
    logdir = wd / "logs"
    listener = _Listener()
    checks_yaml = write_workload(logdir, files, listener.port)
    hport = free_port()
    fake = Fake(free_port(), wd) if fire else None
    logs = f"logs:\n  - name: services\n    paths: [{logdir}/*.log]\n{tail_opts}    rules:\n{rules_yaml()}"
    cfg = wd / "config.yaml"
    cfg.write_text(agent_config(state_dir=wd / "state", health_port=hport, push_port=fake.port if fake else free_port(),
                                logs_yaml=logs, checks_yaml=checks_yaml if with_checks else "",
                                max_per_second=100, max_per_minute=1000,
                                outbox="max_bytes: 256MiB", resolve_after="10m"))
    agent = start_agent(cfg, hport, wd / "agent.log")
    try:
        ready = agent.wait_ready()
        if fake is not None:
            fake.start()
            with open(logdir / "svc-0000.log", "a") as fh:
                fh.write(_rare_line(random.Random(1), 0, 0) + "\n")
            counter = LineCounter(fake.out)
            deadline = time.monotonic() + 30
            while counter.poll() < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            counter.close()
        time.sleep(settle)
        health = agent.healthz()
        c0, t0 = cpu_seconds(agent.pid), time.monotonic()
        time.sleep(window)
        c1, t1 = cpu_seconds(agent.pid), time.monotonic()
        st = proc_status(agent.pid)
        return {
            "cpu_pct": (c1 - c0) / (t1 - t0) * 100,
            "rss": st["VmRSS"] / 1024,
            "hwm": st["VmHWM"] / 1024,
            "threads": st.get("Threads", 0),
            "fds": open_fds(agent.pid),
            "files_tailed": health.get("files_tailed", -1),
            "ready_s": ready,
            "tcp_probes": listener.accepted,
        }
    finally:
        agent.stop()
        listener.close()
        if fake is not None:
            fake.stop()


def bench_idle(workdir: Path, runs: int, files: int, window: float, settle: float) -> list[dict[str, Any]]:
    out = []
    for i in range(runs):
        log(f"idle run {i + 1}/{runs}: {files} files, 20 checks, {window:g}s window")
        out.append(_one(workdir / "idle", files, window, settle))
        log(f"  {out[-1]}")
    return out


DIAGNOSTICS = {  # one run each, to attribute the idle cost (not part of the target rows)
    "same, after one event was delivered (HTTP client loaded)": {"fire": True},
    "same with `max_open_files: 4096`": {"tail_opts": "    max_open_files: 4096\n"},
    "same without the 20 checks": {"with_checks": False},
    "200 files (max_open_files default), no checks": {"files": 200, "with_checks": False},
}


def bench_idle_diagnostics(workdir: Path, window: float, settle: float) -> dict[str, dict[str, Any]]:
    out = {}
    for label, kw in DIAGNOSTICS.items():
        log(f"idle diagnostic: {label}")
        kw = dict(kw)
        files = kw.pop("files", 2000)
        out[label] = _one(workdir / "idle", files, window, settle, **kw)
        log(f"  {out[label]}")
    return out
