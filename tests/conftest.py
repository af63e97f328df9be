"""Shared fixtures: a real Flashduty-speaking endpoint and a real agent process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_flashduty import FakeFlashduty

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition with a deadline; the assertion message says what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
async def fake() -> AsyncIterator[FakeFlashduty]:
    async with FakeFlashduty(per_second=None, per_minute=None) as server:
        yield server


class AgentProcess:
    """``dutytail run`` as a child process, the way systemd runs it."""

    def __init__(self, workdir: Path, config_text: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(textwrap.dedent(config_text))
        self.health_port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.stdout_path = workdir / "agent.stdout"
        self.stderr_path = workdir / "agent.stderr"

    def write_config(self, text: str) -> None:
        self.config_path.write_text(textwrap.dedent(text))

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def start(self) -> None:
        self.runs += 1
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "-c", str(self.config_path)],
            cwd=self.workdir, env={**self.env, "DUTYTAIL_TEST_HEALTH_PORT": str(self.health_port)},
            stdout=out, stderr=err,
        )
        out.close()
        err.close()

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.health_url + path, timeout=2) as r:
                body = r.read()
                return r.status, json.loads(body) if path != "/metrics" else body.decode()
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    async def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            try:
                return self.get("/readyz")[0] == 200
            except OSError:
                return False

        await wait_until(ready, timeout, "agent /readyz")

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def logs(self) -> str:
        text = ""
        for p in (self.stdout_path, self.stderr_path):
            if p.exists():
                text += p.read_text(errors="replace")
        return text

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def agent_process(tmp_path: Path) -> Any:
    made: list[AgentProcess] = []

    def make(config_text: str, env: dict[str, str] | None = None) -> AgentProcess:
        agent = AgentProcess(tmp_path, config_text, env)
        made.append(agent)
        return agent

    yield make
    for agent in made:
        agent.cleanup()
