"""Structured and container logs through the real agent: files, the format stage, `where`, templates and labels
from fields, Kubernetes labels, parse errors in /metrics and /status, CRI partials across a restart, journald
fields in `where`, and `test-rule --json` showing what it parsed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty, validate_event
from tests.ops_helpers import append, metric, metrics, run_cli, status

CID = "3f" * 32
HEAD = """\
state_dir: ./state
flashduty: {{push_url: "{url}"}}
health: {{listen: "127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}"}}
alerts: {{max_events_per_key_per_minute: 1000, max_events_per_minute: 100000}}
"""

API = HEAD + """\
logs:
  - name: api
    paths: ["./logs/api.log"]
    start_at: beginning
    format: json
    rules:
      - name: http-5xx
        where:
          status: {{gte: 500}}
          req.method: {{in: [POST, PUT]}}
          req.path: {{match: '^/api/'}}
        identity: [req.path]
        title: "{{status}} on {{req.path}}"
        labels: {{service: "{{service}}", team: "{{team}}"}}
      - name: errors
        where: {{level: error}}
        match: 'timeout'
        title: "timeout in {{service}}: {{line}}"
      - name: panics
        contains: "panic:"
        title: "panic [{{missing.field}}]"
"""


def record(**fields: Any) -> str:
    return orjson.dumps(fields).decode()


def by_rule(fake: FakeFlashduty, rule: str) -> list[dict[str, Any]]:
    return [e for e in fake.events if e.get("labels", {}).get("rule") == rule]


async def test_json_where_identity_templates_and_labels_from_fields(tmp_path: Path, fake: FakeFlashduty,
                                                                   agent_process: Any) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "api.log"
    append(log,
           record(msg="ok", status=200, req={"method": "POST", "path": "/api/orders"}, service="shop"),
           record(msg="bad gateway", status=502, req={"method": "GET", "path": "/api/orders"}, service="shop"),
           record(msg="boom", status=503, req={"method": "POST", "path": "/api/orders"}, service="shop"),
           record(msg="boom", status="504", req={"method": "PUT", "path": "/api/users"}, service="shop"),
           record(msg="boom", status=500, req={"method": "POST", "path": "/health"}, service="shop"),
           record(msg="db timeout after 5s", level="error", service="billing"),
           record(msg="slow but fine: timeout raised", level="info", service="billing"),
           "plain text line: timeout, not a record",  # no fields: `where: {level: error}` cannot hold
           "panic: runtime error")  # no `where`: the whole line is the message and `contains` matches
    agent = agent_process(API.format(url=fake.url))
    agent.start()
    await agent.wait_ready()
    await fake.wait_for_events(4)
    http = by_rule(fake, "http-5xx")
    assert sorted(e["title_rule"] for e in http) == ["503 on /api/orders", "504 on /api/users"]
    for event in http:
        assert validate_event(event) == []
        assert event["labels"]["service"] == "shop"
        assert event["labels"]["req_path"].startswith("/api/")  # identity as a label
        assert "team" not in event["labels"]  # a label whose template came out empty is left out
    assert len({e["alert_key"] for e in http}) == 2  # one alert per req.path
    [timeout] = by_rule(fake, "errors")
    assert timeout["title_rule"] == "timeout in billing: db timeout after 5s"  # {line} is the message field
    [panic] = by_rule(fake, "panics")
    assert panic["title_rule"] == "panic []"  # a missing field renders as an empty string
    text = await metrics(agent)
    assert metric(text, "dutytail_parse_errors_total", source="api", format="json") == 2
    source = (await status(agent))["sources"]["api"]
    assert source["format"] == ["json"] and source["parse_errors"] == {"json": 2}
    assert agent.stop() == 0
    assert len(fake.events) == 4 and fake.violations == []


LOGFMT = HEAD + """\
logs:
  - name: worker
    paths: ["./logs/worker.log"]
    start_at: beginning
    format: logfmt
    rules:
      - name: slow-jobs
        where: {{dur_ms: {{gt: 1000}}, queue: {{not_in: [batch]}}}}
        identity: [job]
        title: "{{job}} took {{dur_ms}} ms: {{line}}"
"""


async def test_logfmt_quoting_numbers_and_identity(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    (tmp_path / "logs").mkdir()
    append(tmp_path / "logs" / "worker.log",
           'level=info job=a queue=default dur_ms=1500 msg="job \\"a\\" finished"',
           "level=info job=b queue=batch dur_ms=90000 msg=done",
           'level=info job=c queue=default dur_ms=999.5 msg="fast enough"',
           "level=info job=d queue=default dur_ms=abc msg=garbage")
    agent = agent_process(LOGFMT.format(url=fake.url))
    agent.start()
    await agent.wait_ready()
    events = await fake.wait_for_events(1)
    assert events[0]["title_rule"] == 'a took 1500 ms: job "a" finished'
    assert events[0]["labels"]["job"] == "a"
    assert agent.stop() == 0
    assert len(fake.events) == 1


PODS = HEAD + """\
logs:
  - name: pods
    paths: ["./containers/*.log"]
    start_at: beginning
    format: [cri, json]
    rules:
      - name: pod-errors
        where: {{level: error, stream: stderr}}
        title: "{{k8s_namespace}}/{{k8s_pod}}: {{line}}"
"""


async def test_cri_json_kubernetes_labels_and_partials_across_a_restart(tmp_path: Path, fake: FakeFlashduty,
                                                                        agent_process: Any) -> None:
    (tmp_path / "containers").mkdir()
    log = tmp_path / "containers" / f"checkout-5d9f7-abcde_shop_server-{CID}.log"
    long_msg = "x" * 5000
    full = record(level="error", msg=f"card declined {long_msg}")
    append(log,
           f"2026-11-27T08:00:00.000000001Z stdout F {record(level='error', msg='on stdout: not this rule')}",
           f"2026-11-27T08:00:00.000000002Z stderr F {record(level='info', msg='fine')}",
           f"2026-11-27T08:00:00.000000003Z stderr P {full[:2000]}",
           f"2026-11-27T08:00:00.000000004Z stderr P {full[2000:4000]}")
    agent = agent_process(PODS.format(url=fake.url))
    agent.start()
    await agent.wait_ready()
    await wait_until(lambda: (metric(agent.get("/metrics")[1], "dutytail_lines_read_total", source="pods") or 0) >= 4,
                     10, "4 lines read")
    assert agent.stop() == 0  # the record is pending: its first part keeps the checkpoint
    assert fake.events == []
    append(log, f"2026-11-27T08:00:00.000000005Z stderr F {full[4000:]}")
    agent.start()
    await agent.wait_ready()
    events = await fake.wait_for_events(1)
    event = events[0]
    assert event["title_rule"].startswith("shop/checkout-5d9f7-abcde: card declined xxx")
    labels = event["labels"]
    assert (labels["k8s_namespace"], labels["k8s_pod"], labels["k8s_container"]) == \
        ("shop", "checkout-5d9f7-abcde", "server")
    assert f"card declined {long_msg}"[:1500] in event["description"]  # joined whole: no part lost
    assert agent.stop() == 0
    assert len(fake.events) == 1  # and nothing doubled by the restart


async def test_test_rule_json_shows_the_fields_it_parsed(tmp_path: Path, fake: FakeFlashduty,
                                                         agent_process: Any) -> None:
    (tmp_path / "logs").mkdir()
    sample = tmp_path / "sample.log"
    sample.write_text(record(msg="boom", status=503, req={"method": "POST", "path": "/api/pay"}, service="shop")
                      + "\n" + "not json\n")
    agent = agent_process(API.format(url=fake.url))
    result = await run_cli(agent, "test-rule", "-c", str(agent.config_path), "--no-settle", "--json",
                           str(sample))
    assert result.code == 0, result.output
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    [fired] = [s for s in shown if s["body"]["event_status"] != "Ok"]
    assert fired["body"]["title_rule"] == "503 on /api/pay"
    assert fired["from"]["fields"]["req"] == {"method": "POST", "path": "/api/pay"}
    assert fired["from"]["message"] == "boom" and fired["from"]["parse_error"] is None


REMOTE = "/lib/systemd/systemd-journal-remote"


@pytest.mark.skipif(not (Path(REMOTE).exists() and shutil.which("journalctl")),
                    reason="needs journalctl and systemd-journal-remote (installed by .ci/run)")
async def test_journald_fields_in_where(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> None:
    from tests.test_journal import write_journal

    journal = tmp_path / "sys.journal"
    write_journal(journal, [("cron.service", "worker failed"), ("nginx.service", "worker failed"),
                            ("nginx.service", "all good")])
    agent = agent_process(HEAD.format(url=fake.url) + f"""\
journal:
  - name: system
    file: {journal}
    start_at: beginning
    rules:
      - name: nginx-failed
        where: {{unit: nginx.service, priority: {{lte: 3}}, SYSLOG_IDENTIFIER: nginx}}
        match: failed
        title: "{{unit}}: {{line}}"
""")
    agent.start()
    await agent.wait_ready()
    events = await fake.wait_for_events(1)
    assert events[0]["title_rule"] == "nginx.service: worker failed"
    assert agent.stop() == 0
    assert len(fake.events) == 1


async def test_test_rule_joins_cri_partials_like_the_tailer(tmp_path: Path, fake: FakeFlashduty,
                                                            agent_process: Any) -> None:
    sample = tmp_path / f"web-1_shop_server-{CID}.log"
    full = record(level="error", msg="upstream " + "y" * 100 + " reset")
    sample.write_text(f"2026-11-27T08:00:00Z stderr P {full[:60]}\n2026-11-27T08:00:01Z stderr F {full[60:]}\n")
    agent = agent_process(PODS.format(url=fake.url))
    result = await run_cli(agent, "test-rule", "-c", str(agent.config_path), "--no-settle", "--json", str(sample))
    assert result.code == 0, result.output
    [fired] = [json.loads(line) for line in result.stdout.splitlines()]
    assert fired["from"]["message"] == "upstream " + "y" * 100 + " reset"
    assert fired["from"]["fields"]["k8s_pod"] == "web-1" and fired["body"]["labels"]["k8s_namespace"] == "shop"


async def test_a_50_mib_json_line_follows_max_line_bytes_with_bounded_memory(tmp_path: Path, fake: FakeFlashduty,
                                                                             agent_process: Any) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "api.log"
    with log.open("w") as f:
        f.write('{"msg":"panic: huge payload","blob":"' + "z" * (50 * 1024 * 1024) + '"}\n')
        f.write(record(msg="panic: small") + "\n")
    agent = agent_process(API.format(url=fake.url))
    agent.start()
    await agent.wait_ready()
    events = await fake.wait_for_events(1)
    # the line is cut at max_line_bytes (64 KiB): no longer JSON, so its text is the message, and it is counted
    assert events[0]["title_rule"] == "panic []"
    text = await metrics(agent)
    assert metric(text, "dutytail_lines_truncated_total", source="api") == 1
    assert metric(text, "dutytail_parse_errors_total", source="api", format="json") == 1
    assert agent.proc is not None
    peak_kib = next(int(line.split()[1]) for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))
    assert peak_kib < 160 * 1024, f"peak RSS {peak_kib} KiB for a 50 MiB line"
    assert agent.stop() == 0
    assert len(fake.events) == 1  # the second panic is the same open alert (no identity): counted, not re-sent
