"""Network probes: a TCP connect, and an HTTP request (status, latency, body match, TLS certificate days).

aiohttp is imported when an http check first runs, so an agent without one never pays its memory.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from agent.checks.config import HttpProbe, TcpProbe
from agent.checks.probes import ProbeError, above
from agent.checks.result import CheckResult, PerfData, RawStatus, worst
from agent.lazy import ensure_loaded, lazy_import

if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = lazy_import("aiohttp")

BODY_LIMIT = 1024 * 1024
"""Bytes of an HTTP body searched by ``body_match``; a health endpoint that returns more is misused."""


def _oserror(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 1)``."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


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
    status = above(ms, cfg.warning_ms, cfg.critical_ms)
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
    await ensure_loaded("aiohttp")  # imported in a worker thread, and never read while another import runs
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

    lat_status = above(ms, cfg.warning_ms, cfg.critical_ms)
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
