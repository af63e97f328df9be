"""System probes: disk, memory, load, processes, a systemd unit's state, and the age of a file.

The blocking calls (statvfs, psutil, glob, reading a pidfile) run through the check's ``ThreadGate``.
psutil is imported when a process, load or memory check first runs, so an agent without one never pays
its memory.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import time
from typing import TYPE_CHECKING

from agent.checks.command import run_command
from agent.checks.config import DiskProbe, FileAgeProbe, LoadProbe, MemoryProbe, ProcessProbe, SystemdUnitProbe
from agent.checks.probes import ProbeError, ThreadGate, above
from agent.checks.result import CheckResult, PerfData, RawStatus, worst
from agent.lazy import lazy_import

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")

SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
"""Exists exactly when the system was booted with systemd (what ``sd_booted()`` tests)."""

SYSTEMCTL = "systemctl"


def _range(warning: float | None) -> str | None:
    return None if warning is None else f"{warning:g}"


# --- disk -----------------------------------------------------------------------------------------------


def _statvfs(path: str) -> os.statvfs_result:
    return os.statvfs(path)


async def probe_disk(cfg: DiskProbe, gate: ThreadGate) -> CheckResult:
    try:
        st = await gate.run(_statvfs, cfg.path)
    except FileNotFoundError:
        raise ProbeError(f"{cfg.path}: no such file or directory") from None
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    pct = 100.0 * used / (used + avail) if used + avail > 0 else 0.0
    statuses = [above(pct, cfg.warning, cfg.critical)]
    perf = [
        PerfData("used_pct", round(pct, 2), "%", _range(cfg.warning), _range(cfg.critical), 0, 100),
        PerfData("free_bytes", float(avail), "B", None, None, 0, float(used + avail)),
    ]
    text = f"{cfg.path} {pct:.1f}% used ({_human(avail)} free)"
    inodes_used = st.f_files - st.f_ffree
    inodes_total = inodes_used + st.f_favail
    if st.f_files > 0 and inodes_total > 0:
        ipct = 100.0 * inodes_used / inodes_total
        statuses.append(above(ipct, cfg.inodes_warning, cfg.inodes_critical))
        perf.append(
            PerfData(
                "inodes_used_pct",
                round(ipct, 2),
                "%",
                _range(cfg.inodes_warning),
                _range(cfg.inodes_critical),
                0,
                100,
            )
        )
        text += f", inodes {ipct:.1f}% used"
    elif cfg.inodes_warning is not None or cfg.inodes_critical is not None:
        text += ", inodes not reported by this filesystem"
    return CheckResult(worst(statuses), text, perfdata=perf)


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} PiB"  # pragma: no cover


# --- process --------------------------------------------------------------------------------------------


def _read_pidfile(path: str) -> int | None:
    """The pid in ``path``; ``None`` when the file is missing (daemons remove it when they stop)."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            text = handle.read(64).strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ProbeError(f"cannot read pidfile {path}: {exc.strerror or exc}") from None
    if not text.isdigit() or int(text) <= 0:
        raise ProbeError(f"pidfile {path} does not hold a pid ({text[:20]!r})")
    return int(text)


def _alive(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.AccessDenied:  # exists, owned by someone else (the agent usually runs unprivileged)
        return True
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _count_processes(cfg: ProcessProbe) -> tuple[int, str]:
    """(count, what was looked for). Zombies and the agent itself never count."""
    if cfg.pidfile is not None:
        pid = _read_pidfile(cfg.pidfile)
        if pid is None:
            return 0, f"pidfile {cfg.pidfile} (missing)"
        return (1 if _alive(pid) else 0), f"pid {pid} from {cfg.pidfile}"
    me = os.getpid()
    pattern = re.compile(cfg.cmdline) if cfg.cmdline is not None else None
    count = 0
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if proc.pid == me or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if pattern is not None:
            cmdline = info.get("cmdline") or []
            if cmdline and pattern.search(" ".join(cmdline)):
                count += 1
        elif info.get("name") == cfg.name:
            count += 1
    what = f"name {cfg.name!r}" if cfg.name is not None else f"cmdline /{cfg.cmdline}/"
    return count, what


async def probe_process(cfg: ProcessProbe, gate: ThreadGate) -> CheckResult:
    count, what = await gate.run(_count_processes, cfg)
    bounds = f"{cfg.min}..{'' if cfg.max is None else cfg.max}"
    ok = count >= cfg.min and (cfg.max is None or count <= cfg.max)
    perf = [PerfData("procs", float(count), "", None, f"{cfg.min}:{'' if cfg.max is None else cfg.max}", 0)]
    noun = "process" if count == 1 else "processes"
    text = f"{count} {noun} matching {what}" + ("" if ok else f" (expected {bounds})")
    if cfg.pidfile is not None and count == 0:
        text = f"{what} is not running"
    return CheckResult("OK" if ok else "CRITICAL", text, perfdata=perf)


# --- file_age -------------------------------------------------------------------------------------------


def _newest(pattern: str) -> tuple[str, float] | None:
    paths = glob.glob(pattern) if glob.has_magic(pattern) else [pattern]
    best: tuple[str, float] | None = None
    for path in paths:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:  # vanished between glob and stat, or a dangling symlink
            continue
        if best is None or mtime > best[1]:
            best = (path, mtime)
    return best


async def probe_file_age(cfg: FileAgeProbe, gate: ThreadGate) -> CheckResult:
    newest = await gate.run(_newest, cfg.path)
    if newest is None:
        return CheckResult("CRITICAL", f"no file matches {cfg.path}")
    path, mtime = newest
    age = max(0.0, time.time() - mtime)
    if cfg.critical_age is None:
        status: RawStatus = "CRITICAL" if age > cfg.max_age else "OK"
    elif age > cfg.critical_age:
        status = "CRITICAL"
    else:
        status = "WARNING" if age > cfg.max_age else "OK"
    limit = f"max {_age(cfg.max_age)}"
    if cfg.critical_age is not None:
        limit += f", critical {_age(cfg.critical_age)}"
    perf = [
        PerfData(
            "age",
            round(age, 3),
            "s",
            f"{cfg.max_age:g}" if cfg.critical_age is not None else None,
            f"{(cfg.critical_age if cfg.critical_age is not None else cfg.max_age):g}",
            0,
        )
    ]
    return CheckResult(status, f"newest {path} is {_age(age)} old ({limit})", perfdata=perf)


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


# --- systemd_unit ---------------------------------------------------------------------------------------


def systemd_available() -> bool:
    """True when ``systemctl`` exists and the system runs systemd (a container often has one, not both)."""
    return shutil.which(SYSTEMCTL) is not None and os.path.isdir(SYSTEMD_RUNTIME_DIR)


async def probe_systemd_unit(cfg: SystemdUnitProbe, limit: float) -> CheckResult:
    if not systemd_available():
        raise ProbeError("systemd not available (no systemctl, or the system was not booted with systemd)")
    result = await run_command(
        [SYSTEMCTL, "show", "--no-pager", "-p", "LoadState,ActiveState,SubState", cfg.unit], timeout=limit
    )
    if result.reason or result.exit_code != 0:
        raise ProbeError(f"systemctl show {cfg.unit} failed: {result.summary}")
    text = result.summary + "\n" + result.long_output
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    load, active, sub = props.get("LoadState", ""), props.get("ActiveState", ""), props.get("SubState", "")
    state = f"{active} ({sub})" if sub else active
    if load == "not-found":
        return CheckResult("CRITICAL", f"unit {cfg.unit} not found")
    if active == "active":
        return CheckResult("OK", f"{cfg.unit} is {state}")
    if active in ("reloading", "activating", "deactivating"):
        return CheckResult("WARNING", f"{cfg.unit} is {state}")
    if not active:
        raise ProbeError(f"systemctl show {cfg.unit} printed no ActiveState")
    return CheckResult("CRITICAL", f"{cfg.unit} is {state}")


# --- load -----------------------------------------------------------------------------------------------


def _loadavg() -> tuple[tuple[float, float, float], int]:
    return os.getloadavg(), psutil.cpu_count(logical=True) or os.cpu_count() or 1


async def probe_load(cfg: LoadProbe, gate: ThreadGate) -> CheckResult:
    loads, cpus = await gate.run(_loadavg)
    divisor = cpus if cfg.per_cpu else 1
    values = [value / divisor for value in loads]
    warn, crit = cfg.triples()
    statuses: list[RawStatus] = []
    perf = []
    for label, value, w, c in zip(("load1", "load5", "load15"), values, warn, crit, strict=True):
        statuses.append(above(value, w, c))
        perf.append(PerfData(label, round(value, 3), "", _range(w), _range(c), 0))
    per = f" per CPU ({cpus} CPUs)" if cfg.per_cpu else ""
    text = f"load average{per}: " + ", ".join(f"{v:.2f}" for v in values)
    return CheckResult(worst(statuses), text, perfdata=perf)


# --- memory ---------------------------------------------------------------------------------------------


def _memory() -> tuple[int, int]:
    vm = psutil.virtual_memory()
    return vm.total, vm.available


async def probe_memory(cfg: MemoryProbe, gate: ThreadGate) -> CheckResult:
    total, available = await gate.run(_memory)
    pct = 100.0 * (total - available) / total if total else 0.0
    status = above(pct, cfg.warning, cfg.critical)
    perf = [
        PerfData("used_pct", round(pct, 2), "%", _range(cfg.warning), _range(cfg.critical), 0, 100),
        PerfData("available_bytes", float(available), "B", None, None, 0, float(total)),
    ]
    return CheckResult(status, f"memory {pct:.1f}% used ({_human(available)} available)", perfdata=perf)
