"""Logs on a terminal are readable colored lines; anywhere else (journald, a pipe) JSON lines, unless
``log_format`` says otherwise. The real agent, on a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

CONFIG = "state_dir: ./state\nhealth: {enabled: false}\n"


def run_until_ready(tmp_path: Path, extra: str = "", *, terminal: bool) -> str:
    (tmp_path / "config.yaml").write_text(CONFIG + extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if terminal:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", "config.yaml"], cwd=tmp_path, env=env,
                                stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
    else:
        leader = -1
        proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "-c", "config.yaml"], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
    out = b""
    deadline = time.monotonic() + 20
    try:
        while b"agent_ready" not in out:
            assert time.monotonic() < deadline, out.decode(errors="replace")
            fd = leader if terminal else proc.stdout.fileno()  # type: ignore[union-attr]
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        if terminal:
            os.close(leader)
    return out.decode(errors="replace")


def test_on_a_terminal_logs_are_colored_console_lines(tmp_path: Path) -> None:
    out = run_until_ready(tmp_path, terminal=True)
    ready = next(line for line in out.splitlines() if "agent_ready" in line)
    assert "\x1b[" in ready  # colored
    assert not ready.lstrip().startswith("{")


def test_log_format_json_on_a_terminal_and_json_when_piped(tmp_path: Path) -> None:
    out = run_until_ready(tmp_path, "log_format: json\n", terminal=True)
    ready = next(line for line in out.splitlines() if "agent_ready" in line)
    assert json.loads(ready.strip())["event"] == "agent_ready"
    piped = run_until_ready(tmp_path, terminal=False)
    assert json.loads(next(line for line in piped.splitlines() if "agent_ready" in line))["event"] == "agent_ready"


@pytest.mark.parametrize("value", ["console"])
def test_log_format_console_when_piped(tmp_path: Path, value: str) -> None:
    out = run_until_ready(tmp_path, f"log_format: {value}\n", terminal=False)
    ready = next(line for line in out.splitlines() if "agent_ready" in line)
    assert not ready.startswith("{") and "\x1b[" not in ready  # readable, not colored where no terminal is
