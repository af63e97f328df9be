"""What the agent shows of itself (agent/app/views.py): the shapes of /healthz, /readyz, /status and /metrics,
the bearer token on every endpoint, and a non-loopback listen address refused unless allow_remote is set.

The tests drive a real `dutytail run` process (tests/conftest.py ``agent_process``) against real files and
the fake Flashduty endpoint on 127.0.0.1, and wait on conditions with deadlines.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from agent import __version__
from agent import cli as dutytail_cli
from tests.conftest import AgentProcess
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import (
    append,
    cli_in_process,
    config_text,
    eventually,
    fetch,
    logs_dir,
    metric,
    outbox_empty,
    started,
)


async def test_endpoints_shapes_token_and_remote_listen(tmp_path: Path, fake: FakeFlashduty, agent_process: Any,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, app = logs_dir(tmp_path)
    agent = await started(agent_process, config_text(fake.url))
    append(app, "INFO fine", "ERROR timeout on orders id=1")
    (event,) = await fake.wait_for_events(1)
    await eventually(lambda: outbox_empty(agent), 5, "outbox drained")

    r = await fetch(agent, "/healthz")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    health = r.json()
    assert health["status"] == "ok" and health["version"] == __version__
    assert health["uptime_seconds"] > 0
    assert health["outbox_depth"] == 0 and health["dead_letters"] == 0
    assert abs(health["last_successful_delivery"] - time.time()) < 60
    assert health["files_tailed"] == 1

    r = await fetch(agent, "/readyz")
    assert (r.status, r.json()) == (200, {"ready": True, "reasons": []})

    snapshot = (await fetch(agent, "/status")).json()
    (tailed,) = snapshot["sources"]["app"]["files"]
    assert tailed["path"].endswith("app.log") and tailed["offset"] == app.stat().st_size
    assert snapshot["rules"] == {"app/db-timeout": 1}
    (alert,) = snapshot["alerts"]
    assert alert["alert_key"] == event["alert_key"] and alert["source"] == "app" and alert["name"] == "db-timeout"
    assert snapshot["outbox"]["depth"] == 0 and snapshot["outbox"]["dead_letters"] == 0
    out = snapshot["outputs"]["default"]
    assert out["sent"] == 1 and out["failed"] == 0 and "integration_key=***" in out["url"]

    r = await fetch(agent, "/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert metric(text, "dutytail_lines_read_total", source="app") == 2
    assert metric(text, "dutytail_rule_matches_total", source="app", rule="db-timeout") == 1
    assert metric(text, "dutytail_events_sent_total", output="default") == 1
    assert metric(text, "dutytail_outbox_depth") == 0
    assert metric(text, "dutytail_send_latency_seconds_bucket", output="default", le="+Inf") == 1
    assert metric(text, "dutytail_open_alerts") == 1
    assert metric(text, "dutytail_config_error") == 0
    assert "# TYPE dutytail_config_reloads_total counter" in text
    assert agent.stop() == 0

    # token: every endpoint wants the bearer header; `dutytail status` sends it from the config
    token = "ops-health-token-5f1c9e"
    agent = agent_process(config_text(fake.url, health_extra=f"  token: {token}\n"))
    agent.start()
    await eventually(lambda: _code(agent, "/healthz") == 401, 30, "the token-protected agent to answer 401")
    for _ in range(600):  # the endpoints answer before the first scan is done; ready comes a moment later
        if (await fetch(agent, "/readyz", token=token)).status == 200:
            break
        await asyncio.sleep(0.05)
    for path in ("/healthz", "/readyz", "/status", "/metrics"):
        assert (await fetch(agent, path)).status == 401, path
        assert (await fetch(agent, path, token="wrong")).status == 401, path
        assert (await fetch(agent, path, token=token)).status == 200, path
    code, shown = await cli_in_process(agent, capsys, monkeypatch, "status")
    assert code == 0 and shown.startswith(f"dutytail {__version__}  ok"), shown
    assert token not in agent.logs()

    # a non-loopback listen address is refused unless allow_remote is set
    remote = tmp_path / "remote.yaml"
    remote.write_text("health:\n  listen: 0.0.0.0:8790\n")
    assert dutytail_cli.main(["check-config", "-c", str(remote)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"{remote}:2:3: health: listening on 0.0.0.0 exposes host details; set allow_remote: true "
        "(and a token) to do so")
    # ... and with allow_remote, a token is required: an empty one means no authentication at all
    for token in ("", '  token: ""\n', "  token: '  '\n"):
        remote.write_text(f"health:\n  listen: 0.0.0.0:8790\n  allow_remote: true\n{token}")
        assert dutytail_cli.main(["check-config", "-c", str(remote)]) == 2
        assert "without a token would let anyone" in capsys.readouterr().err
    remote.write_text("health:\n  listen: 0.0.0.0:8790\n  allow_remote: true\n  token: t0ken-for-remote\n")
    assert dutytail_cli.main(["check-config", "-c", str(remote)]) == 0
    assert "OK" in capsys.readouterr().out


def _code(agent: AgentProcess, path: str) -> int | None:
    try:
        return agent.get(path)[0]
    except OSError:
        return None
