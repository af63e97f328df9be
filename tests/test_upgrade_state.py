"""An upgrade resumes from the state the first wave's release wrote, with nothing lost or repeated.

tests/fixtures/state_v1/ holds an ``outbox.db`` written by that release (commit eecb90e, see make_fixture.py
there): a file checkpoint before a partial last line, open alerts, two queued events and a dead letter.
The agent of today starts on a copy of it and must deliver the queued events as they were stored, resolve
the open alerts, read only what was appended since (the partial line completed, and new lines), keep the
dead letter, and then resume from its own checkpoint on the next restart.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from agent.events import stable_alert_key
from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import metric, metrics

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "state_v1"
E1_KEY = "85020fbfebec1998aa867dd9d285396a"  # db-error, code=E1: open, its Critical queued
DISK_KEY = "52262fce54e661100496a691ee67e1bd"  # disk: open, its Warning queued
AUDIT_KEY = "6a10d1613d88750bfc75e0927891965b"  # audit: open (its Info dead-lettered), default quiet period

CONFIG = """
host: fixture-host
state_dir: ./state
health:
  listen: 127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}
flashduty:
  - name: default
    push_url: "{url}"
    retry_initial: 50ms
  - name: strict
    push_url: "{url}"
logs:
  - name: app
    paths: ["{log}"]
    start_at: beginning
    rules:
      - name: db-error
        match: 'ERROR (?P<code>\\w+)'
        identity: [code]
        severity: Critical
        resolve: {{after: 3s}}
      - name: disk
        contains: "WARN disk"
        resolve: {{after: 3s}}
      - name: audit
        contains: "AUDIT"
        severity: Info
        output: strict
"""


def install_fixture(tmp_path: Path) -> Path:
    """Copy the old store and log; point the stored checkpoint at this copy of the log (same file, new host),
    and move the store's clock to now, as if the old release stopped just before the upgrade."""
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(FIXTURE / "outbox.db", state / "outbox.db")
    log = tmp_path / "app.log"
    shutil.copy(FIXTURE / "app.log", log)
    st = os.stat(log)
    db = sqlite3.connect(state / "outbox.db")
    with db:
        shift_store_clock(db)
        for source, key, text in db.execute("SELECT source, key, state FROM checkpoints").fetchall():
            stored = json.loads(text)
            if "path" not in stored:
                continue
            stored.update(path=str(log), dev=st.st_dev, ino=st.st_ino)
            db.execute("UPDATE checkpoints SET state=? WHERE source=? AND key=?", (json.dumps(stored), source, key))
    db.close()
    return log


def shift_store_clock(db: sqlite3.Connection) -> None:
    """Move every time the store recorded forward by the fixture's age. Without this the test depends on
    when it runs: 10 minutes after the fixture was made the audit alert's quiet period (600 s) has passed,
    and a day after, the queued events are past the outbox's max_age. Event bodies are left as stored."""
    (made,) = db.execute("SELECT max(created) FROM events").fetchone()
    shift = time.time() - made
    db.execute("UPDATE events SET created = created + ?, next_attempt = next_attempt + ? * (next_attempt > 0)",
               (shift, shift))
    db.execute("UPDATE dead_letters SET created = created + ?, failed_at = failed_at + ?", (shift, shift))
    db.execute("UPDATE checkpoints SET updated = updated + ?", (shift,))
    for key, text in db.execute("SELECT alert_key, state FROM alerts").fetchall():
        stored = json.loads(text)
        for name in ("first_seen", "last_seen", "last_notified"):
            if stored.get(name):
                stored[name] += shift
        db.execute("UPDATE alerts SET state = ?, updated = updated + ? WHERE alert_key = ?",
                   (json.dumps(stored), shift, key))


def stored_bodies() -> dict[str, dict]:
    db = sqlite3.connect(FIXTURE / "outbox.db")
    try:
        return {k: json.loads(b) for k, b in db.execute("SELECT alert_key, body FROM events")}
    finally:
        db.close()


async def test_resumes_from_first_wave_state(tmp_path: Path, fake: FakeFlashduty, agent_process) -> None:
    log = install_fixture(tmp_path)
    queued = stored_bodies()
    assert set(queued) == {E1_KEY, DISK_KEY}
    with log.open("a") as f:  # written while the agent was being upgraded
        f.write("ved\n2026-11-30T10:00:25Z ERROR E2 disk io\n2026-11-30T10:00:26Z info request 26 served\n")
    agent = agent_process(CONFIG.format(url=fake.url, log=log))
    agent.start()
    await agent.wait_ready()
    e2_key = stable_alert_key("fixture-host", "app", "db-error", "code=E2")

    def delivered() -> bool:
        return (fake.statuses_for(E1_KEY) == ["Critical", "Ok"] and fake.statuses_for(DISK_KEY) == ["Warning", "Ok"]
                and fake.statuses_for(e2_key)[:1] == ["Critical"])

    await wait_until(delivered, 20, f"queued events, their Oks and the new alert (got {fake.describe()})")
    # the queued events go out exactly as the old release stored them
    assert fake.events_for(E1_KEY)[0] == queued[E1_KEY]
    assert fake.events_for(DISK_KEY)[0] == queued[DISK_KEY]
    assert fake.statuses_for(AUDIT_KEY) == []  # still open (10 min quiet period); its dead letter is kept
    text = await metrics(agent)
    # only what was appended is read: the completed partial line and two new ones; no old line again
    assert metric(text, "dutytail_lines_read_total", source="app") == 3
    assert metric(text, "dutytail_rule_matches_total", source="app", rule="db-error") == 1
    assert metric(text, "dutytail_rule_matches_total", source="app", rule="audit") in (None, 0)
    assert agent.stop() == 0

    listing = subprocess.run([sys.executable, "-m", "agent", "dead-letters", "list", "--json", "-c",
                              str(agent.config_path)], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                             env={**os.environ, "DUTYTAIL_TEST_HEALTH_PORT": "0"})
    assert listing.returncode == 0, listing.stderr
    rows = [json.loads(line) for line in listing.stdout.splitlines()]
    assert [(r["alert_key"], r["status"], r["error_code"]) for r in rows] == [(AUDIT_KEY, 400, "InvalidParameter")]

    # the next restart resumes from the checkpoint the new code wrote
    with log.open("a") as f:
        f.write("2026-11-30T10:00:27Z ERROR E3 again\n")
    agent.start()
    await agent.wait_ready()
    e3_key = stable_alert_key("fixture-host", "app", "db-error", "code=E3")
    await wait_until(lambda: fake.statuses_for(e3_key)[:1] == ["Critical"], 10, "the alert of the line after restart")
    text = await metrics(agent)
    assert metric(text, "dutytail_lines_read_total", source="app") == 1
    assert fake.statuses_for(e2_key).count("Critical") == 1
    assert agent.stop() == 0
