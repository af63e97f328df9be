"""Helpers shared by the bench sections: processes, /proc sampling, the fake endpoint, agent configs, stats."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
KEY = "bench-key-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------- numbers


def mmm(values: Sequence[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    return (min(values), statistics.median(values), max(values)) if values else (float("nan"),) * 3


def fmt_mmm(values: Sequence[float], fmt: str = "{:,.0f}", sep: str = " / ") -> str:
    if not values:
        return "-"
    lo, med, hi = mmm(values)
    if len(values) == 1:
        return fmt.format(med)
    return sep.join(fmt.format(v) for v in (lo, med, hi))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
    return ordered[k]


# ------------------------------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (not its children), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its children still running (the agent's rule processes), from /proc."""
    total = cpu_seconds(pid)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                if ppid == pid:
                    total += cpu_seconds(int(entry))
    return total


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads from /proc/PID/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(value.split()[0])
    return out


def rss_mib(pid: int) -> float:
    return proc_status(pid).get("VmRSS", 0) / 1024


def hwm_mib(pid: int) -> float:
    return proc_status(pid).get("VmHWM", 0) / 1024


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


# ------------------------------------------------------------------------------------------------- machine


def machine() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions: dict[str, str] = {}
    from importlib import metadata

    for dist in ("aiohttp", "uvloop", "orjson", "h11", "hyperscan", "google-re2", "msgspec", "structlog", "watchdog",
                 "pygtail", "py-spy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    tools = {}
    for name, cmd in (("grep", ["grep", "--version"]), ("rsyslogd", ["rsyslogd", "-v"])):
        try:
            tools[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            tools[name] = "not installed"
    try:
        agent_version = subprocess.run([PY, "-m", "agent", "--version"], cwd=ROOT, capture_output=True, text=True,
                                       timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        agent_version = "?"
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    with contextlib.suppress(OSError):
        load = open("/proc/loadavg").read().split()[:3]
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kib / 2**20:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "tools": "; ".join(f"{v}" for v in tools.values()),
        "agent": agent_version,
        "loadavg_at_start": " ".join(load) if "load" in locals() else "?",
    }


def code_version() -> dict[str, str]:
    """What agent code a measurement ran: HEAD, whether agent/ has uncommitted changes, a content hash."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "agent").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"

    dirty = git("status", "--porcelain", "--", "agent")
    return {"head": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": "yes" if dirty else "no", "hash": digest.hexdigest()[:12]}


# ------------------------------------------------------------------------------------------------- network


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, urllib.error.URLError):
        return 0, ""


def metric(text: str, name: str) -> float | None:
    """Sum of a Prometheus metric's samples (all label sets)."""
    total = None
    for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M):
        total = (total or 0.0) + float(m.group(1))
    return total


def push_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/event/push/alert/standard?integration_key={KEY}"


# ------------------------------------------------------------------------------------------------- processes


class Fake:
    """The standalone fake Flashduty (``python -m tests.fake_flashduty``), limits off, events to a file."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.out = workdir / f"fake-{port}.jsonl"
        self.err = workdir / f"fake-{port}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [PY, "-m", "tests.fake_flashduty", "--port", str(self.port), "--key", KEY, "--per-second", "0",
                 "--per-minute", "0"], cwd=ROOT, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if b"listening" in self.err.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"fake endpoint died: {self.err.read_text()}")
            time.sleep(0.02)
        raise RuntimeError("fake endpoint did not start")

    def stop(self) -> None:
        stop_process(self.proc, 10)
        self.proc = None


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> int | None:
    """SIGTERM, wait, then SIGKILL: only the process we started, by its pid."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


class LineCounter:
    """Counts the newlines of a growing file incrementally (cheap: only new bytes are read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0
        self._fh: Any = None

    def poll(self) -> int:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")
            except FileNotFoundError:
                return 0
        while True:
            chunk = self._fh.read(8 << 20)
            if not chunk:
                return self.lines
            self.lines += chunk.count(b"\n")
            self.offset += len(chunk)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


FAKE_LINE = re.compile(
    rb'^\{"received_at": ([0-9.e+]+), "request_id": "[^"]*", "alert_key": "([^"]*)".*?"event_status": "(\w+)"', re.M
)


def read_fake_events(path: Path) -> list[tuple[float, str, str]]:
    """(received_at, alert_key, event_status) per accepted event, from the fake's stdout file."""
    data = path.read_bytes()
    return [(float(t), k.decode(), s.decode()) for t, k, s in FAKE_LINE.findall(data)]


def last_received_at(path: Path) -> float:
    with open(path, "rb") as fh:
        fh.seek(max(0, path.stat().st_size - 65536))
        tail = fh.read().splitlines()
    for line in reversed(tail):
        with contextlib.suppress(ValueError):
            return float(json.loads(line)["received_at"])
    raise ValueError("no event in the fake's output")


def warm(path: Path) -> None:
    """Read a file once so every contender starts from the page cache."""
    with open(path, "rb") as fh:
        while fh.read(16 << 20):
            pass


SETTLE_AFTER_READY = 1.0
"""Seconds between ready and a file's appearance in a watched directory (bench/growth.py, bench/formats.py): an
agent with a push URL imports its HTTP client in a worker thread right after ready (~0.2 s of CPU, once per
process); a file appearing on a running agent does not share the cores with that."""


def compile_bytecode() -> None:
    """Compile the agent's modules to bytecode, as the Debian package's postinst does (and pip for a wheel): an
    editable checkout under PYTHONDONTWRITEBYTECODE=1 (this project's machines set it) otherwise compiles every
    module from source at each start, which no installed agent does."""
    subprocess.run([PY, "-m", "compileall", "-q", "-j", "0", str(ROOT / "agent")], check=True)


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


@dataclass
class AgentProc:
    proc: subprocess.Popen[bytes]
    health: str
    started: float

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds from start until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"agent exited with {self.proc.returncode}")
            status, _ = http_get(self.health + "/readyz", 1.0)
            if status == 200:
                return time.time() - self.started
            time.sleep(0.05)
        raise RuntimeError("agent not ready in time")

    def metrics(self) -> str:
        return http_get(self.health + "/metrics", 2.0)[1]

    def healthz(self) -> dict[str, Any]:
        status, text = http_get(self.health + "/healthz", 2.0)
        return json.loads(text) if status == 200 and text else {}

    def stop(self, timeout: float = 30.0) -> int | None:
        return stop_process(self.proc, timeout)


def start_agent(config: Path, health_port: int, logfile: Path, prefix: Sequence[str] = ()) -> AgentProc:
    os.chmod(config, 0o600)  # it holds the integration key (the agent warns about world-readable ones)
    with open(logfile, "wb") as out:
        started = time.time()
        proc = subprocess.Popen([*prefix, PY, "-m", "agent", "run", "-c", str(config)], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    return AgentProc(proc, f"http://127.0.0.1:{health_port}", started)


def agent_config(*, state_dir: Path, health_port: int, push_port: int, logs_yaml: str = "", checks_yaml: str = "",
                 max_per_second: int = 100_000, max_per_minute: int = 10_000_000, concurrency: int = 32,
                 retry: str = "", outbox: str = "max_bytes: 8GiB", resolve_after: str = "1d",
                 user_defaults: bool = False) -> str:
    """A config for the bench: storm caps raised, pacing as given, outbox bound raised, local endpoints.

    ``user_defaults``: instead, the agent's own defaults for pacing (Flashduty's 100/s and 1000/min), sender
    concurrency and storm control, as a user's config that sets none of them would run."""
    if user_defaults:
        delivery, storm = "", ""
    else:
        delivery = (f"  max_per_second: {max_per_second}\n  max_per_minute: {max_per_minute}\n"
                    f"  concurrency: {concurrency}\n")
        storm = "  max_events_per_key_per_minute: 1000000\n  max_events_per_minute: 1000000000\n"
    return f"""\
state_dir: {state_dir}
host: bench-host
log_level: warning
shutdown_timeout: 5s
flashduty:
  push_url: {push_url(push_port)}
{delivery}{retry}health:
  listen: 127.0.0.1:{health_port}
alerts:
  default_resolve_after: {resolve_after}
{storm}outbox: {{{outbox}}}
{logs_yaml}{checks_yaml}"""
