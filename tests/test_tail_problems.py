"""Files the source cannot read (agent/tail/problems.py): dangling and retargeted symlinks, permission denied
reported, retried and isolated from the other files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.tail import TailConfig
from tests.conftest import ROOT
from tests.tail_helpers import Harness, append, make_lines, report, tail_config, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return tail_config(tmp_path, **{"name": "lim", "rotate_wait": 0.1, **kw})


# --- symlinks -------------------------------------------------------------------------------------------------


async def test_symlink_retarget_and_dangling(tmp_path: Path) -> None:
    logs, targets = tmp_path / "logs", tmp_path / "targets"
    logs.mkdir()
    targets.mkdir()
    t1, t2, t3 = targets / "t1", targets / "t2", targets / "t3"
    append(t1, make_lines("T1", 0, 10))
    (logs / "current.log").symlink_to(t1)
    (logs / "broken.log").symlink_to(t3)  # dangling until t3 appears
    h = Harness(cfg(logs, rescan_interval=0.5))
    tailer = await h.start()
    await h.wait_lines(10)
    assert any("dangling symlink" in e["error"] for e in tailer.status()["errors"])
    append(t1, make_lines("T1", 10, 5))  # written through the target's directory: still picked up
    await h.wait_lines(15)
    append(t2, make_lines("T2", 0, 10))
    tmp_link = logs / ".current.tmp"
    tmp_link.symlink_to(t2)
    os.replace(tmp_link, logs / "current.log")  # ln -sfn: atomic retarget
    await h.wait_lines(25)
    append(t3, make_lines("T3", 0, 3))
    await h.wait_lines(28)
    await wait_until(lambda: not tailer.status()["errors"], what="dangling error cleared")
    await h.wait_idle()
    await h.stop()
    h.assert_exactly(make_lines("T1", 0, 15) + make_lines("T2", 0, 10) + make_lines("T3", 0, 3), "symlinks")


# --- permissions ----------------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    sys.path.insert(0, {root!r})
    import structlog
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout carries the protocol
    from agent.tail import FileSource, TailConfig

    async def main():
        cfg = TailConfig(name="perm", paths=[{pattern!r}], start_at="beginning", poll_interval=0.1)
        tailer = FileSource(cfg, {{}}, is_first_start=True)
        queue = asyncio.Queue(maxsize=8)
        task = asyncio.create_task(tailer.run(queue))
        stop = {stop!r}
        while not os.path.exists(stop):
            try:
                batch = await asyncio.wait_for(queue.get(), 0.1)
                for line in batch.lines:
                    print(json.dumps({{"line": line}}), flush=True)
            except asyncio.TimeoutError:
                pass
            print(json.dumps({{"status": tailer.status()["errors"]}}), flush=True)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await tailer.close(None)

    asyncio.run(main())
    """
)


def _child_prefix() -> list[str]:
    """How to run the child so that file modes apply: as root, drop the DAC-override capabilities."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")  # util-linux
    if setpriv is None:
        pytest.skip("running as root without setpriv: chmod 000 cannot deny reads here")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--"]


async def test_permission_denied_reported_retried_and_isolated(tmp_path: Path) -> None:
    """chmod 000 really denies: as root (CI), the tailer runs in a child without CAP_DAC_OVERRIDE."""
    ok, secret, stop = tmp_path / "ok.log", tmp_path / "secret.log", tmp_path / "stop"
    append(ok, make_lines("OK", 0, 5))
    append(secret, make_lines("SECRET", 0, 5))
    os.chmod(secret, 0o000)
    script = CHILD.format(root=str(ROOT), pattern=str(tmp_path / "*.log"), stop=str(stop))
    proc = subprocess.Popen(
        [*_child_prefix(), sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        text=True,
    )
    lines: list[str] = []
    errors: list[dict[str, str]] = []

    async def pump() -> None:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        while True:
            raw = await loop.run_in_executor(None, proc.stdout.readline)
            if not raw:
                return
            msg = json.loads(raw)
            if "line" in msg:
                lines.append(msg["line"])
            else:
                errors[:] = msg["status"]

    reader = asyncio.create_task(pump())
    try:
        await wait_until(lambda: len(lines) >= 5, 15, "readable file delivered")
        await wait_until(lambda: any("ermission denied" in e["error"] for e in errors), 5, "EACCES in status")
        assert errors[0]["path"] == str(secret)
        append(ok, make_lines("OK", 5, 5))  # the other file keeps flowing
        await wait_until(lambda: len(lines) >= 10, 5, "more lines from the readable file")
        os.chmod(secret, 0o644)  # fixed by the operator: retried, read, error cleared
        await wait_until(lambda: len(lines) >= 15, 5, "previously unreadable file delivered")
        await wait_until(lambda: not errors, 5, "error cleared from status")
    finally:
        stop.touch()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await reader
    stderr = proc.stderr.read() if proc.stderr else ""
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    assert proc.returncode == 0, stderr
    assert "tail.file_error" in stderr and "tail.file_recovered" in stderr, "denial and recovery are logged"
    assert sorted(lines) == sorted(make_lines("OK", 0, 10) + make_lines("SECRET", 0, 5))
    report("permission denied (chmod 000), then fixed", 15, lines)
