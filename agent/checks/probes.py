"""Built-in probes: measurements the agent takes itself, without external plugins.

Each probe returns a ``CheckResult`` with Nagios semantics (status, one-line summary, perfdata), so the
rest of the pipeline treats them exactly like command checks. Blocking work (statvfs, psutil, glob, file
reads) runs in a worker thread through a ``ThreadGate``: a statvfs on a hung NFS mount can block for
hours and a thread cannot be cancelled, so the gate lets at most one such stuck thread exist per check
instead of piling up a new one every interval and starving the shared thread pool.
"""

from __future__ import annotations

import asyncio
import glob
import math
import os
import re
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from agent.checks.command import run_command
from agent.checks.config import (
    DiskProbe,
    FileAgeProbe,
    HttpProbe,
    LoadProbe,
    MemoryProbe,
    ProcessProbe,
    SystemdUnitProbe,
    TcpProbe,
)
from agent.checks.result import CheckResult, PerfData, RawStatus, worst
from agent.lazy import lazy_import

# imported when an http or resource check first runs: an agent without such checks never pays their RSS
if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")
if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")

T = TypeVar("T")

BODY_LIMIT = 1024 * 1024
"""Bytes of an HTTP body searched by ``body_match``; a health endpoint that returns more is misused."""

SYSTEMD_RUNTIME_DIR = "/run/systemd/system"
"""Exists exactly when the system was booted with systemd (what ``sd_booted()`` tests)."""

SYSTEMCTL = "systemctl"


class ProbeBusy(Exception):
    """The previous run's blocking call of this check has not returned yet."""


class ProbeError(Exception):
    """A probe could not take its measurement; the message is the summary shown to the user."""


class ThreadGate:
    """Runs blocking calls in a thread, refusing a new one while the previous one is still stuck."""

    def __init__(self) -> None:
        self._busy = False
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._busy

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._busy:
                raise ProbeBusy
            self._busy = True

        def work() -> T:
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy = False

        return await asyncio.to_thread(work)


def _oserror(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 1)``."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _above(value: float, warning: float | None, critical: float | None) -> RawStatus:
    if critical is not None and value >= critical:
        return "CRITICAL"
    if warning is not None and value >= warning:
        return "WARNING"
    return "OK"


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
    statuses = [_above(pct, cfg.warning, cfg.critical)]
    perf = [
        PerfData("used_pct", round(pct, 2), "%", _range(cfg.warning), _range(cfg.critical), 0, 100),
        PerfData("free_bytes", float(avail), "B", None, None, 0, float(used + avail)),
    ]
    text = f"{cfg.path} {pct:.1f}% used ({_human(avail)} free)"
    inodes_used = st.f_files - st.f_ffree
    inodes_total = inodes_used + st.f_favail
    if st.f_files > 0 and inodes_total > 0:
        ipct = 100.0 * inodes_used / inodes_total
        statuses.append(_above(ipct, cfg.inodes_warning, cfg.inodes_critical))
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


# --- tcp ------------------------------------------------------------------------------------------------


async def probe_tcp(cfg: TcpProbe) -> CheckResult:
    target = f"{cfg.host}:{cfg.port}"
    started = time.monotonic()
    try:
        _reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
    except OSError as exc:
        if isinstance(exc, socket.gaierror):
            raise ProbeError(f"cannot resolve {cfg.host}: {exc.strerror or exc}") from None
        return CheckResult("CRITICAL", f"connect to {target} failed: {_oserror(exc)}")
    latency = time.monotonic() - started
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    ms = _ms(latency)
    status = _above(ms, cfg.warning_ms, cfg.critical_ms)
    perf = [PerfData("time", round(latency, 6), "s", _sec(cfg.warning_ms), _sec(cfg.critical_ms), 0)]
    return CheckResult(status, f"connected to {target} in {ms:.1f} ms", perfdata=perf)


def _sec(ms: float | None) -> str | None:
    return None if ms is None else f"{ms / 1000.0:g}"


# --- http -----------------------------------------------------------------------------------------------


def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return tag, pos, pos + length


def cert_not_after(der: bytes) -> datetime:
    """``notAfter`` of a DER X.509 certificate.

    ``SSLSocket.getpeercert()`` only decodes a certificate it verified; with ``verify_tls: false`` we still
    want the expiry date, and the stdlib offers no public parser, so walk the few DER elements needed:
    Certificate > TBSCertificate > [version] serial signature issuer validity > notBefore notAfter.
    """
    _, start, _ = _der_element(der, 0)  # Certificate
    _, pos, _ = _der_element(der, start)  # TBSCertificate
    tag, _, end = _der_element(der, pos)
    if tag == 0xA0:  # explicit version; `end` is then the end of the serial number
        tag, _, end = _der_element(der, end)
    for _field in ("signature", "issuer"):
        tag, _, end = _der_element(der, end)
    tag, vstart, _ = _der_element(der, end)  # validity
    _, _, after_not_before = _der_element(der, vstart)
    tag, tstart, tend = _der_element(der, after_not_before)
    text = der[tstart:tend].decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError(f"unexpected time tag {tag:#x} in certificate")
    return datetime.strptime(text.rstrip("Z")[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


async def probe_http(cfg: HttpProbe) -> CheckResult:
    findings: list[tuple[RawStatus, str]] = []
    perf: list[PerfData] = []
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(cfg.url, ssl=cfg.verify_tls, allow_redirects=False) as resp,
        ):
            body = await resp.content.read(BODY_LIMIT) if cfg.body_match is not None else b""
            code = resp.status
            charset = resp.charset or "utf-8"
    except aiohttp.ClientConnectorCertificateError as exc:
        return CheckResult("CRITICAL", f"TLS certificate of {cfg.url} not trusted: {exc.certificate_error}")
    except aiohttp.ClientSSLError as exc:
        return CheckResult("CRITICAL", f"TLS error talking to {cfg.url}: {exc}")
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, socket.gaierror):
            raise ProbeError(f"cannot resolve host of {cfg.url}: {exc.os_error.strerror}") from None
        why = _oserror(exc.os_error)
        return CheckResult("CRITICAL", f"connect to {cfg.url} failed: {why}")
    except aiohttp.ClientError as exc:
        return CheckResult("CRITICAL", f"request to {cfg.url} failed: {type(exc).__name__}: {exc}")
    latency = time.monotonic() - started
    ms = _ms(latency)

    if cfg.status_ok(code):
        findings.append(("OK", f"HTTP {code}"))
    else:
        expected = "200-399" if cfg.expect_status is None else ",".join(map(str, cfg.expect_status))
        findings.append(("CRITICAL", f"HTTP {code} (expected {expected})"))
    perf.append(PerfData("status", float(code)))

    lat_status = _above(ms, cfg.warning_ms, cfg.critical_ms)
    findings.append((lat_status, f"in {ms:.0f} ms" + ("" if lat_status == "OK" else " (slow)")))
    perf.append(PerfData("time", round(latency, 6), "s", _sec(cfg.warning_ms), _sec(cfg.critical_ms), 0))

    if cfg.body_match is not None:
        try:
            text = body.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            text = body.decode("utf-8", errors="replace")
        if re.search(cfg.body_match, text):
            findings.append(("OK", "body matches"))
        else:
            findings.append(("CRITICAL", f"body does not match /{cfg.body_match}/"))

    if cfg.tls_days_warning is not None or cfg.tls_days_critical is not None:
        try:
            cert_der = await _peer_certificate(cfg.url)
        except (OSError, ssl.SSLError) as exc:
            findings.append(("UNKNOWN", f"cannot read the TLS certificate: {_oserror(exc)}"))
        else:
            findings.append(_tls_days(cfg, cert_der, perf))

    status = worst([s for s, _ in findings])
    summary = ", ".join(text for _, text in findings)
    return CheckResult(status, f"{cfg.url}: {summary}", perfdata=perf)


def _tls_days(cfg: HttpProbe, cert_der: bytes | None, perf: list[PerfData]) -> tuple[RawStatus, str]:
    """Judge the certificate's days left; appends the ``tls_days`` perfdata item."""
    if not cert_der:
        return "UNKNOWN", "no TLS certificate seen"
    not_after = cert_not_after(cert_der)
    days = (not_after - datetime.now(UTC)).total_seconds() / 86400.0
    status: RawStatus = "OK"
    if cfg.tls_days_critical is not None and days < cfg.tls_days_critical:
        status = "CRITICAL"
    elif cfg.tls_days_warning is not None and days < cfg.tls_days_warning:
        status = "WARNING"
    perf.append(
        PerfData(
            "tls_days",
            round(days, 2),
            "",
            _range_int(cfg.tls_days_warning),
            _range_int(cfg.tls_days_critical),
        )
    )
    expiry = not_after.strftime("%Y-%m-%d")
    if days < 0:
        return status, f"certificate expired {expiry}"
    return status, f"certificate expires {expiry} ({math.floor(days)} days)"


async def _peer_certificate(url: str) -> bytes | None:
    """The server's leaf certificate (DER), from a separate TLS handshake.

    aiohttp releases the connection as soon as a small body is read, taking the transport (and its
    ``ssl_object``) with it, so the certificate cannot be read reliably from the response. One extra
    handshake, only for checks that set a tls_days threshold, is cheap and uses public APIs only.
    Verification is off here on purpose: whether the certificate is trusted is judged by the request
    itself (``verify_tls``); this only reads its dates.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _reader, writer = await asyncio.open_connection(host, parts.port or 443, ssl=context, server_hostname=host or None)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


def _range_int(days: int | None) -> str | None:
    # Nagios range "N:" = alert when the value is below N.
    return None if days is None else f"{days}:"


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
        statuses.append(_above(value, w, c))
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
    status = _above(pct, cfg.warning, cfg.critical)
    perf = [
        PerfData("used_pct", round(pct, 2), "%", _range(cfg.warning), _range(cfg.critical), 0, 100),
        PerfData("available_bytes", float(available), "B", None, None, 0, float(total)),
    ]
    return CheckResult(status, f"memory {pct:.1f}% used ({_human(available)} available)", perfdata=perf)
