"""`dutytail test-rule` replays a log on its own clock and prints what would be sent, touching nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent.linetime import line_time
from tests.conftest import ROOT

CONFIG = """\
state_dir: ./state-must-not-appear
flashduty: {push_url: "http://127.0.0.1:9/never?integration_key=nope"}
logs:
  - name: app
    paths: ["./*.log"]
    rules:
      - name: oom
        contains: OutOfMemoryError
        threshold: {count: 3, within: 1m}
        severity: Critical
        resolve: {after: 5m}
      - name: upstream
        match: 'upstream (?P<up>\\S+) is down'
        identity: [up]
        resolve: {match: 'upstream (?P<up>\\S+) is up'}
"""

LOG = """\
2026-11-27T10:00:00Z java.lang.OutOfMemoryError: heap
2026-11-27T10:00:20Z java.lang.OutOfMemoryError: heap
2026-11-27T10:01:30Z java.lang.OutOfMemoryError: heap
2026-11-27T10:01:40Z java.lang.OutOfMemoryError: heap
2026-11-27T10:02:00Z java.lang.OutOfMemoryError: heap
2026-11-27T10:02:05Z upstream pay is down
2026-11-27T10:02:06Z upstream search is down
2026-11-27T10:02:09Z upstream pay is up
2026-11-27T10:03:00Z all quiet
"""


def run(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "app.log").write_text(LOG)
    return subprocess.run([sys.executable, "-m", "agent", "test-rule", "-c", "config.yaml", *args],
                          cwd=tmp_path, capture_output=True, text=True, input=stdin,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)


def test_replay_uses_the_log_clock_and_shows_recoveries(tmp_path: Path) -> None:
    result = run(tmp_path, "--json", "app.log")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    summary = [(e["at"], e["body"]["labels"]["rule"], e["body"]["event_status"]) for e in events]
    assert summary == [
        # 3 OOMs within a minute only at 10:02:00 (10:00:00 and 10:00:20 are out of that window)
        ("2026-11-27T10:02:00Z", "oom", "Critical"),
        ("2026-11-27T10:02:05Z", "upstream", "Warning"),
        ("2026-11-27T10:02:06Z", "upstream", "Warning"),
        ("2026-11-27T10:02:09Z", "upstream", "Ok"),
        # the end of input advances the clock past the quiet period to show how the OOM alert closes
        ("2026-11-27T10:08:01Z", "oom", "Ok"),
    ]
    pay = [e["body"] for e in events if e["body"]["labels"].get("up") == "pay"]
    assert pay[0]["alert_key"] == pay[1]["alert_key"]
    assert not (tmp_path / "state-must-not-appear").exists()  # no state touched


def test_rule_filter_table_output_and_stdin(tmp_path: Path) -> None:
    result = run(tmp_path, "--rule", "upstream", "-", stdin=LOG)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["time", "status", "alert_key", "title"]
    assert sum(" Warning " in line for line in lines) == 2 and sum(" Ok " in line for line in lines) == 1
    assert "3 event(s) would be sent" in result.stdout
    unknown = run(tmp_path, "--rule", "nope", "app.log")
    assert unknown.returncode == 1 and "no rule named 'nope'" in unknown.stderr


def test_line_time_formats() -> None:
    assert line_time("2026-11-27T10:00:00Z x", 2026) == 1795773600.0
    assert line_time('1.2.3.4 - - [27/Nov/2026:10:00:00 +0000] "GET /"', 2026) == 1795773600.0
    assert line_time("Nov 27 10:00:00 host sshd[1]: x", 2026) == 1795773600.0
    assert line_time("no time here", 2026) is None


TIMED_CONFIG = """\
state_dir: ./state-must-not-appear
flashduty: {push_url: "http://127.0.0.1:9/never?integration_key=nope"}
logs:
  - name: app
    paths: ["./*.log"]
    rules:
      - name: heartbeat-missing
        match: 'heartbeat ok'
        absent: {after: 5m}
        severity: Critical
      - name: backup-late
        match: 'backup (?P<job>\\S+) started'
        expect: {match: 'backup (?P<job>\\S+) finished', within: 2h}
        identity: [job]
        title: "backup {job} did not finish within 2h"
"""

TIMED_LOG = """\
2026-12-01T00:00:00Z heartbeat ok
2026-12-01T00:01:00Z backup db started
2026-12-01T00:01:00Z backup files started
2026-12-01T00:02:00Z heartbeat ok
2026-12-01T00:30:00Z backup files finished
2026-12-01T00:31:00Z heartbeat ok
2026-12-01T03:00:00Z backup db finished
2026-12-01T03:01:00Z heartbeat ok
2026-12-01T03:02:00Z backup web started
"""


def test_absence_and_expect_events_on_the_logs_clock_and_the_state_at_the_end(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(TIMED_CONFIG)
    (tmp_path / "app.log").write_text(TIMED_LOG)
    result = subprocess.run([sys.executable, "-m", "agent", "test-rule", "-c", "config.yaml", "--json", "app.log"],
                            cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)}, check=False)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["at"], e["body"]["event_status"], e["body"]["title_rule"].split(" on ")[0]) for e in events] == [
        ("2026-12-01T00:07:00Z", "Critical", "heartbeat-missing"),  # 5 min after the 00:02 heartbeat
        ("2026-12-01T00:31:00Z", "Ok", "heartbeat-missing"),
        ("2026-12-01T00:36:00Z", "Critical", "heartbeat-missing"),  # silent again until 03:01
        ("2026-12-01T02:01:00Z", "Warning", "backup db did not finish within 2h"),  # files finished on time
        ("2026-12-01T03:00:00Z", "Ok", "backup db did not finish within 2h"),
        ("2026-12-01T03:01:00Z", "Ok", "heartbeat-missing"),
        # the end of the input: still silent, and the last backup still running, on the same clock
        ("2026-12-01T03:06:00Z", "Critical", "heartbeat-missing"),
        ("2026-12-01T05:02:00Z", "Warning", "backup web did not finish within 2h"),
    ]
    assert "No line matching the rule for 5m" in events[0]["body"]["description"]
