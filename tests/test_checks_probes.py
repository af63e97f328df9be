"""Built-in probes against real resources: files, sockets, an HTTP(S) server, processes, the kernel."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.checks import CheckConfig, probes_system, run_check_once
from agent.checks.probes import ThreadGate
from agent.checks.probes_network import cert_not_after
from agent.checks.runner import execute


def make(**data: object) -> CheckConfig:
    return CheckConfig.model_validate({"name": "p", "timeout": "5s", **data})


# --- disk ----------------------------------------------------------------------------------------------


async def test_disk_thresholds_on_a_real_filesystem(tmp_path: Path) -> None:
    st = os.statvfs(tmp_path)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    expected = 100.0 * used / (used + st.f_bavail * st.f_frsize)

    ok = await run_check_once(make(disk={"path": str(tmp_path), "warning": "100%", "critical": "100%"}))
    assert ok.status == "OK" and ok.reason == ""
    perf = {p.label: p for p in ok.perfdata}
    assert abs(perf["used_pct"].value - expected) < 1.0  # type: ignore[operator]
    assert str(tmp_path) in ok.summary

    warn = await run_check_once(make(disk={"path": str(tmp_path), "warning": "0%", "critical": "100%"}))
    assert warn.status == "WARNING"

    if st.f_files == 0:
        pytest.skip("this filesystem does not report inodes")
    inodes = await run_check_once(make(disk={"path": str(tmp_path), "warning": 100, "inodes_critical": 0}))
    assert inodes.status == "CRITICAL" and "inodes" in inodes.summary
    assert "inodes_used_pct" in {p.label for p in inodes.perfdata}


async def test_disk_missing_path_is_unknown(tmp_path: Path) -> None:
    result = await run_check_once(make(disk={"path": str(tmp_path / "gone"), "warning": 80}))
    assert result.status == "UNKNOWN" and result.reason == "probe_error"
    assert "no such file" in result.summary


async def test_blocked_thread_times_out_then_gate_refuses_a_second_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statvfs stuck on a dead NFS server: time out, then do not start a second stuck thread."""
    release = threading.Event()
    real = probes_system._statvfs

    def hung(path: str) -> os.statvfs_result:
        release.wait(10)
        return real(path)

    monkeypatch.setattr(probes_system, "_statvfs", hung)
    check = make(disk={"path": str(tmp_path), "warning": 100}, timeout="0.2s")
    gate = ThreadGate()
    try:
        first = await execute(check, gate)
        assert first.status == "UNKNOWN" and first.reason == "timeout"
        second = await execute(check, gate)
        assert second.status == "UNKNOWN" and second.reason == "busy"
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while gate.busy:
        assert time.monotonic() < deadline, "stuck thread never finished"
        await asyncio.sleep(0.01)
    third = await execute(check, gate)
    assert third.status == "OK"


# --- tcp -----------------------------------------------------------------------------------------------


async def test_tcp_open_then_closed_port() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        up = await run_check_once(make(tcp={"host": "127.0.0.1", "port": port}))
        slow = await run_check_once(make(tcp={"host": "127.0.0.1", "port": port, "warning_ms": 0.0001}))
    finally:
        server.close()
    assert up.status == "OK" and "connected to 127.0.0.1" in up.summary
    assert up.perfdata[0].label == "time" and up.perfdata[0].uom == "s"
    assert slow.status == "WARNING"

    down = await run_check_once(make(tcp={"host": "127.0.0.1", "port": port}))
    assert down.status == "CRITICAL" and "Connection refused" in down.summary


# --- http ----------------------------------------------------------------------------------------------


async def _start(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def _app() -> web.Application:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="service healthy: version 1.2.3")

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)  # the thing under test is the latency threshold, not a wait
        return web.Response(text="late")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def moved(_: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/slow", slow)
    app.router.add_get("/broken", broken)
    app.router.add_get("/moved", moved)
    return app


@pytest.fixture
async def http_base() -> AsyncIterator[str]:
    runner, port = await _start(_app())
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_http_status_latency_and_body(http_base: str) -> None:
    ok = await run_check_once(make(http={"url": f"{http_base}/ok", "body_match": r"version \d+\.\d+"}))
    assert ok.status == "OK", ok
    assert "HTTP 200" in ok.summary and "body matches" in ok.summary
    perf = {p.label: p.value for p in ok.perfdata}
    assert perf["status"] == 200 and perf["time"] is not None and perf["time"] < 5

    nomatch = await run_check_once(make(http={"url": f"{http_base}/ok", "body_match": "^unhealthy"}))
    assert nomatch.status == "CRITICAL" and "body does not match" in nomatch.summary

    broken = await run_check_once(make(http={"url": f"{http_base}/broken"}))
    assert broken.status == "CRITICAL" and "HTTP 503 (expected 200-399)" in broken.summary
    accepted = await run_check_once(make(http={"url": f"{http_base}/broken", "expect_status": [503]}))
    assert accepted.status == "OK"

    moved = await run_check_once(make(http={"url": f"{http_base}/moved"}))
    assert moved.status == "OK" and "HTTP 302" in moved.summary  # redirects are judged, not followed

    slow = await run_check_once(make(http={"url": f"{http_base}/slow", "warning_ms": 100, "critical_ms": 5000}))
    assert slow.status == "WARNING" and "(slow)" in slow.summary
    too_slow = await run_check_once(make(http={"url": f"{http_base}/slow", "critical_ms": 100}))
    assert too_slow.status == "CRITICAL"

    timeout = await run_check_once(make(http={"url": f"{http_base}/slow"}, timeout="0.1s"))
    assert timeout.status == "UNKNOWN" and timeout.reason == "timeout"


async def test_http_connection_refused() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = await run_check_once(make(http={"url": f"http://127.0.0.1:{port}/"}))
    assert result.status == "CRITICAL" and "Connection refused" in result.summary


def _self_signed(tmp_path: Path, days: int) -> tuple[Path, Path]:
    """A self-signed cert for 127.0.0.1: with `cryptography` when importable, else the openssl CLI."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor the openssl binary is available")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", "/CN=127.0.0.1"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key


async def test_https_certificate_days_left(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path, days=10)
    not_after = cert_not_after(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    assert timedelta(days=9, hours=23) < not_after - datetime.now(UTC) <= timedelta(days=10, minutes=1)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    runner, port = await _start(_app(), context)
    url = f"https://127.0.0.1:{port}/ok"
    try:
        warn = await run_check_once(make(http={"url": url, "verify_tls": False, "tls_days_warning": 30}))
        crit = await run_check_once(
            make(http={"url": url, "verify_tls": False, "tls_days_warning": 30, "tls_days_critical": 14})
        )
        fine = await run_check_once(make(http={"url": url, "verify_tls": False, "tls_days_warning": 7}))
        untrusted = await run_check_once(make(http={"url": url}))
    finally:
        await runner.cleanup()
    assert warn.status == "WARNING", warn
    assert "certificate expires" in warn.summary and "(9 days)" in warn.summary
    days = {p.label: p.value for p in warn.perfdata}["tls_days"]
    assert days is not None and 9.9 < days <= 10.0
    assert crit.status == "CRITICAL"
    assert fine.status == "OK"
    assert untrusted.status == "CRITICAL" and "not trusted" in untrusted.summary


# --- process -------------------------------------------------------------------------------------------


@pytest.fixture
def sleeper() -> Any:
    marker = f"271.{uuid.uuid4().int % 10**9}"
    proc = subprocess.Popen(["sleep", marker])
    try:
        yield proc, marker
    finally:
        proc.kill()
        proc.wait()


async def test_process_by_cmdline_name_and_pidfile(sleeper: Any, tmp_path: Path) -> None:
    proc, marker = sleeper
    by_cmdline = await run_check_once(make(process={"cmdline": rf"^sleep {marker}$"}))
    assert by_cmdline.status == "OK" and by_cmdline.perfdata[0].value == 1
    too_many = await run_check_once(make(process={"cmdline": rf"^sleep {marker}$", "min": 0, "max": 0}))
    assert too_many.status == "CRITICAL" and "expected 0..0" in too_many.summary
    by_name = await run_check_once(make(process={"name": "sleep"}))
    assert by_name.status == "OK"

    pidfile = tmp_path / "svc.pid"
    pidfile.write_text(f"{proc.pid}\n")
    running = await run_check_once(make(process={"pidfile": str(pidfile)}))
    assert running.status == "OK" and f"pid {proc.pid}" in running.summary

    proc.kill()
    proc.wait()  # reaped: the pid no longer exists
    stopped = await run_check_once(make(process={"pidfile": str(pidfile)}))
    assert stopped.status == "CRITICAL" and "is not running" in stopped.summary
    gone = await run_check_once(make(process={"cmdline": rf"^sleep {marker}$"}))
    assert gone.status == "CRITICAL" and gone.perfdata[0].value == 0

    pidfile.unlink()
    missing = await run_check_once(make(process={"pidfile": str(pidfile)}))
    assert missing.status == "CRITICAL" and "missing" in missing.summary
    pidfile.write_text("not a pid")
    garbage = await run_check_once(make(process={"pidfile": str(pidfile)}))
    assert garbage.status == "UNKNOWN" and garbage.reason == "probe_error"


# --- file_age ------------------------------------------------------------------------------------------


async def test_file_age_newest_match_wins(tmp_path: Path) -> None:
    now = time.time()
    old, new = tmp_path / "backup-1.tar", tmp_path / "backup-2.tar"
    old.write_text("x")
    new.write_text("y")
    os.utime(old, (now - 7200, now - 7200))
    os.utime(new, (now - 600, now - 600))
    pattern = str(tmp_path / "backup-*.tar")

    fresh = await run_check_once(make(file_age={"path": pattern, "max_age": "1h"}))
    assert fresh.status == "OK" and "backup-2.tar" in fresh.summary
    age = fresh.perfdata[0].value
    assert age is not None and 599 <= age < 700

    os.utime(new, (now - 5400, now - 5400))
    stale = await run_check_once(make(file_age={"path": pattern, "max_age": "1h"}))
    assert stale.status == "CRITICAL"
    graded = await run_check_once(make(file_age={"path": pattern, "max_age": "1h", "critical_age": "2h"}))
    assert graded.status == "WARNING"
    single = await run_check_once(make(file_age={"path": str(old), "max_age": "1h", "critical_age": "90m"}))
    assert single.status == "CRITICAL"

    nothing = await run_check_once(make(file_age={"path": str(tmp_path / "none-*.tar"), "max_age": "1h"}))
    assert nothing.status == "CRITICAL" and "no file matches" in nothing.summary


# --- systemd_unit --------------------------------------------------------------------------------------


async def test_systemd_unit_without_systemd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(probes_system, "SYSTEMD_RUNTIME_DIR", str(tmp_path / "not-booted-with-systemd"))
    result = await run_check_once(make(systemd_unit={"unit": "ssh.service"}))
    assert result.status == "UNKNOWN" and result.reason == "probe_error"
    assert result.summary.startswith("systemd not available")


@pytest.mark.parametrize(
    ("output", "status", "text"),
    [
        ("LoadState=loaded\nActiveState=active\nSubState=running\n", "OK", "is active (running)"),
        ("LoadState=loaded\nActiveState=failed\nSubState=failed\n", "CRITICAL", "is failed (failed)"),
        ("LoadState=loaded\nActiveState=activating\nSubState=start\n", "WARNING", "is activating"),
        ("LoadState=not-found\nActiveState=inactive\nSubState=dead\n", "CRITICAL", "not found"),
    ],
)
async def test_systemd_unit_states_via_a_systemctl_stand_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, output: str, status: str, text: str
) -> None:
    """A real executable in systemctl's place (this machine may not run systemd) checks the parsing and
    the exact arguments passed."""
    runtime = tmp_path / "run-systemd-system"
    runtime.mkdir()
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/args\nprintf '{output}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(probes_system, "SYSTEMD_RUNTIME_DIR", str(runtime))
    monkeypatch.setattr(probes_system, "SYSTEMCTL", str(fake))
    result = await run_check_once(make(systemd_unit={"unit": "web.service"}))
    assert result.status == status and text in result.summary, result
    assert (tmp_path / "args").read_text().split() == [
        "show", "--no-pager", "-p", "LoadState,ActiveState,SubState", "web.service",
    ]  # fmt: skip


# --- load and memory -----------------------------------------------------------------------------------


async def test_load_and_memory_read_the_kernel() -> None:
    load = await run_check_once(make(load={"warning": 1000, "critical": 2000}))
    assert load.status == "OK" and [p.label for p in load.perfdata] == ["load1", "load5", "load15"]
    per_cpu = (os.getloadavg()[0]) / (os.cpu_count() or 1)
    assert abs(load.perfdata[0].value - per_cpu) < 2  # type: ignore[operator]
    all_three = await run_check_once(make(load={"warning": [0, 0, 0], "critical": [1000, 1000, 1000]}))
    assert all_three.status == "WARNING"

    memory = await run_check_once(make(memory={"warning": "100%", "critical": "100%"}))
    assert memory.status == "OK" and "memory" in memory.summary
    used = {p.label: p.value for p in memory.perfdata}["used_pct"]
    assert used is not None and 0 < used < 100
    critical = await run_check_once(make(memory={"critical": "0%"}))
    assert critical.status == "CRITICAL"
