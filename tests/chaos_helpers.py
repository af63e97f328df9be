"""Helpers for the chaos suite (tests/test_chaos.py): configs, log writers, delivery accounting.

Every scenario writes a known set of uniquely keyed log lines (one line = one alert through
``identity: [id]``) and counts what the fake Flashduty accepted: sent, delivered (distinct ids), lost,
duplicated, and how long the agent took to drain once the fault ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, AgentProcess, wait_until
from tests.fake_flashduty import FakeFlashduty

SCALE = max(1, int(os.environ.get("DUTYTAIL_SOAK_SCALE", "1")))

CHAOS_RULE = "chaos"
FLAP_RULE = "flap"

CONFIG = """\
state_dir: {state_dir}
shutdown_timeout: 5s
flashduty:
  push_url: {url}
  retry_initial: 50ms
  retry_max: {retry_max}
  timeout: {timeout}
  concurrency: {concurrency}
  max_per_second: {max_per_second}
  max_per_minute: {max_per_minute}
health:
  listen: 127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}
alerts:
  max_events_per_key_per_minute: 1000000
  max_events_per_minute: 1000000
logs:
  - name: app
    paths: ["./logs/*.log"]
    start_at: beginning
    rules:
      - name: chaos
        match: 'chaos event id=(?P<id>\\d+)'
        identity: [id]
        severity: Critical
        title: "chaos {{id}}"
        description: "{{line}}"
        resolve: {{after: 1h}}
      - name: flap
        match: 'upstream (?P<up>\\w+) down seq=(?P<seq>\\d+)'
        identity: [up]
        severity: Warning
        title: "upstream {{up}} down"
        description: "{{line}}"
        resolve: {{match: 'upstream (?P<up>\\w+) up seq=(?P<seq>\\d+)'}}
"""


def chaos_config(url: str, *, state_dir: str = "./state", timeout: str = "5s", concurrency: int = 4,
                 max_per_second: int = 1000, max_per_minute: int = 1_000_000, retry_max: str = "500ms") -> str:
    """The agent config every scenario uses (one rule per line, one flapping rule with repeating keys)."""
    return CONFIG.format(url=url, state_dir=state_dir, timeout=timeout, concurrency=concurrency,
                         max_per_second=max_per_second, max_per_minute=max_per_minute, retry_max=retry_max)


# --------------------------------------------------------------------------------------------------
# log lines
# --------------------------------------------------------------------------------------------------


class LogWriter:
    """Appends uniquely numbered chaos lines (and flapping up/down lines) to one log file."""

    def __init__(self, workdir: Path, name: str = "app.log") -> None:
        (workdir / "logs").mkdir(exist_ok=True)
        self.path = workdir / "logs" / name
        self.path.touch()
        self.next_id = 0
        self.flap_seq = 0
        self.flap_state: dict[str, bool] = {}  # upstream -> currently down
        self.flap_expected: dict[str, list[int]] = collections.defaultdict(list)  # upstream -> seqs, in order

    @property
    def written(self) -> int:
        return self.next_id

    def write(self, count: int, *, noise: bool = False) -> range:
        """Append ``count`` chaos lines with fresh ids; return the ids."""
        ids = range(self.next_id, self.next_id + count)
        with self.path.open("a") as f:
            for i in ids:
                if noise:
                    f.write(f"INFO request {i} served in 3ms\n")
                f.write(f"ERROR chaos event id={i}\n")
        self.next_id += count
        return ids

    def write_flaps(self, upstreams: Sequence[str], rounds: int) -> int:
        """Append ``rounds`` down/up transitions per upstream (interleaved); each line is one event."""
        lines = []
        for _ in range(rounds):
            for up in upstreams:
                self.flap_seq += 1
                down = not self.flap_state.get(up, False)
                self.flap_state[up] = down
                lines.append(f"WARN upstream {up} {'down' if down else 'up'} seq={self.flap_seq}\n")
                self.flap_expected[up].append(self.flap_seq)
        with self.path.open("a") as f:
            f.writelines(lines)
        return len(lines)


# --------------------------------------------------------------------------------------------------
# accounting
# --------------------------------------------------------------------------------------------------

_SEQ = re.compile(r"seq=(\d+)")


def chaos_ids(fake: FakeFlashduty) -> list[int]:
    """Ids of every accepted chaos alert event, in arrival order (duplicates included)."""
    return [int(e["labels"]["id"]) for e in fake.events
            if e.get("labels", {}).get("rule") == CHAOS_RULE and e["event_status"] != "Ok"]


def flap_events(fake: FakeFlashduty) -> dict[str, list[tuple[int, str]]]:
    """Per upstream: (seq, status) of every accepted flap event, in arrival order."""
    out: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for e in fake.events:
        labels = e.get("labels", {})
        if labels.get("rule") != FLAP_RULE:
            continue
        match = _SEQ.search(e.get("description", ""))
        assert match, f"flap event without seq: {e}"
        out[labels["up"]].append((int(match.group(1)), e["event_status"]))
    return out


def flap_order_problems(writer: LogWriter, fake: FakeFlashduty) -> list[str]:
    """Per-key order check: each upstream's events arrive in the order they were written (an immediate
    re-send of the same event is tolerated), alternating Warning (down) and Ok (up)."""
    problems = []
    got = flap_events(fake)
    for up, expected in writer.flap_expected.items():
        arrived = got.get(up, [])
        collapsed = [item for i, item in enumerate(arrived) if i == 0 or arrived[i - 1] != item]
        if [seq for seq, _ in collapsed] != expected:
            problems.append(f"{up}: written {expected}, arrived {[seq for seq, _ in arrived]}")
        want = ["Warning" if i % 2 == 0 else "Ok" for i in range(len(collapsed))]
        if [st for _, st in collapsed] != want:
            problems.append(f"{up}: statuses {[st for _, st in collapsed]} do not alternate Warning/Ok")
    return problems


def flap_delivered(writer: LogWriter, fake: FakeFlashduty) -> tuple[int, int, int]:
    """(expected, distinct delivered, duplicates) of the flapping events."""
    got = flap_events(fake)
    expected = sum(len(v) for v in writer.flap_expected.values())
    distinct = sum(len({s for s, _ in got.get(up, [])} & set(seqs)) for up, seqs in writer.flap_expected.items())
    total = sum(len(v) for v in got.values())
    return expected, distinct, total - distinct


@dataclass
class Tally:
    scenario: str
    sent: int
    delivered: int
    lost: int
    duplicated: int
    drain_seconds: float
    notes: str = ""

    def row(self) -> str:
        return (f"| {self.scenario} | {self.sent} | {self.delivered} | {self.lost} | {self.duplicated} | "
                f"{self.drain_seconds:.2f} | {self.notes} |")


RESULTS: list[Tally] = []


class BugStillPresent(AssertionError):
    """Raised only by the final check of a test that reproduces a known agent bug (``xfail(raises=...)``),
    so the same test failing for another reason (a setup timeout) is reported as a real failure."""


TABLE_HEADER = ("| scenario | sent | delivered (distinct) | lost | duplicated | drain s | notes |\n"
                "|---|---:|---:|---:|---:|---:|---|")


def table() -> str:
    return "\n".join([f"chaos results (DUTYTAIL_SOAK_SCALE={SCALE})", TABLE_HEADER, *(r.row() for r in RESULTS)])


def tally(scenario: str, expected_ids: Iterable[int], fake: FakeFlashduty, drain_seconds: float,
          notes: str = "") -> Tally:
    """Count delivery of ``expected_ids`` and record the row (the caller asserts on it)."""
    expected = set(expected_ids)
    got = [i for i in chaos_ids(fake) if i in expected]
    distinct = set(got)
    result = Tally(scenario, len(expected), len(distinct), len(expected - distinct), len(got) - len(distinct),
                   drain_seconds, notes)
    RESULTS.append(result)
    return result


async def wait_delivered(fake: FakeFlashduty, expected_ids: Iterable[int], timeout: float, what: str = "", *,
                         agent: AgentProcess | None = None) -> float:
    """Wait until every expected id arrived at least once; return the seconds it took.

    On timeout the message names the missing ids, what the fake saw and, given the agent, what its tailer
    and outbox say (a line the tailer never read looks different from an event stuck in the queue)."""
    expected = set(expected_ids)
    started = time.monotonic()

    def done() -> bool:
        return expected.issubset(chaos_ids(fake))

    try:
        await fake.wait_until(done, timeout)
    except AssertionError as exc:
        missing = sorted(expected - set(chaos_ids(fake)))
        detail = ""
        if agent is not None and agent.proc is not None and agent.proc.poll() is None:
            try:
                view = status(agent)
                files = [{k: f.get(k) for k in ("path", "offset", "size", "state", "last_error")}
                         for src in view.get("sources", {}).values() for f in src.get("files", [])]
                detail = f"\nagent tail files: {files}\nagent outbox: {view.get('outbox')}"
            except OSError as err:
                detail = f"\nagent /status unavailable: {err}"
        raise AssertionError(f"{what or 'delivery'}: {len(missing)} of {len(expected)} ids never arrived "
                             f"(first: {missing[:10]}){detail}\n{exc}") from None
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------------
# the agent process, without blocking the event loop the fake runs on
# --------------------------------------------------------------------------------------------------


async def stop_agent(agent: AgentProcess, timeout: float = 12.0) -> int:
    """SIGTERM and wait for the exit without blocking the loop (the fake must keep answering the flush)."""
    assert agent.proc is not None
    agent.proc.send_signal(signal.SIGTERM)
    await wait_until(lambda: agent.proc is not None and agent.proc.poll() is not None, timeout, "agent exit")
    return agent.proc.returncode


def status(agent: AgentProcess, timeout: float = 15.0) -> dict[str, Any]:
    """``GET /status``. The timeout is generous: while the agent ingests a burst of thousands of lines its
    event loop can take more than the 2 s of ``AgentProcess.get`` to answer."""
    with urllib.request.urlopen(agent.health_url + "/status", timeout=timeout) as response:
        assert response.status == 200
        body: dict[str, Any] = json.loads(response.read())
        return body


async def run_cli(agent: AgentProcess, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """``python -m agent ARGS -c config.yaml`` in the agent's workdir; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", *args, "-c", str(agent.config_path), cwd=agent.workdir,
        env={**agent.env, "PYTHONPATH": str(ROOT), "DUTYTAIL_TEST_HEALTH_PORT": str(agent.health_port)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --------------------------------------------------------------------------------------------------
# request-time analysis
# --------------------------------------------------------------------------------------------------


def max_in_window(times: Sequence[float], window: float) -> int:
    """Most requests in any half-open window ``(t - window, t]`` (how the fake counts its limits)."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the disk-full scenario (needs root/CAP_SYS_ADMIN): "
                    f"{mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte with one file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as f:
        for chunk in (1 << 16, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * chunk)
    return filler
