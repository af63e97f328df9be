"""What an idle agent keeps loaded (issue 18, bench/footprint.py): a dry-run agent with a log source, a disk
check and the health server, ready and serving /metrics, has not imported the HTTP client (aiohttp,
urllib.request, http.client), prometheus_client, pydantic (the config models are msgspec Structs) nor
importlib.metadata; and it still prints the events of a dry run.

The agent runs in a child process (this test process has imported most of them itself), started by a small
driver that waits for readiness, fetches /metrics over a raw socket, appends a matching line, waits for its
event on stdout, and then reports ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT, free_port

_COMMON = r"""
import asyncio, json, sys, threading
from agent.app import Agent
from agent.cli import run_async
from agent.config import load_config
from agent.logsetup import configure_logging

async def started_agent(config_path, **kw):
    # a real agent on the config, running and ready (or given up on after 30 s)
    configure_logging("warning", stream=sys.stderr)
    agent = Agent(load_config(config_path), config_path, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    for _ in range(1500):
        if agent.ready:
            break
        await asyncio.sleep(0.02)
    return agent, stop, task
"""

_DRIVER = _COMMON + r"""
NOT_EXPECTED = ("aiohttp", "urllib.request", "http.client", "prometheus_client", "psutil", "re2", "zstandard",
                "pydantic", "importlib.metadata")

def loaded(name):
    module = sys.modules.get(name)
    # a module agent.lazy handed out but nobody used yet is a LazyLoader placeholder, not the real thing
    return module is not None and type(module).__name__ != "_LazyModule"

async def main():
    config_path, log_path, port, events_path = sys.argv[1:5]
    with open(events_path, "w") as out:
        agent, stop, task = await started_agent(config_path, stdout=out)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        metrics = (await reader.read()).decode()
        writer.close()
        with open(log_path, "a") as fh:
            fh.write("ERROR timeout on orders id=7\n")
        for _ in range(1500):
            out.flush()
            if open(events_path).read().count("\n") >= 1:
                break
            await asyncio.sleep(0.02)
        report = {"ready": agent.ready, "metrics_ok": "dutytail_lines_read_total" in metrics,
                  "loaded": [n for n in NOT_EXPECTED if loaded(n)], "events": open(events_path).read()}
        stop.set()
        await task
    print(json.dumps(report))

run_async(main())
"""


def test_idle_dry_run_agent_does_not_load_what_it_does_not_use(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.write_text("INFO boot\n")
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(textwrap.dedent(f"""\
        state_dir: {tmp_path}/state
        flashduty: {{}}
        health:
          listen: 127.0.0.1:{port}
        logs:
          - name: app
            paths: ["{logs}/*.log"]
            rules:
              - name: db-timeout
                match: 'timeout on (?P<db>\\w+) id=(?P<id>\\d+)'
                identity: [id]
        checks:
          - name: root-disk
            disk: {{path: /, warning: 99%, critical: 100%}}
            interval: 60s
        """))
    config.chmod(0o600)
    res = subprocess.run([sys.executable, "-c", _DRIVER, str(config), str(app), str(port), str(tmp_path / "ev.jsonl")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["ready"] and report["metrics_ok"]
    assert report["loaded"] == [], f"an idle dry-run agent imported {report['loaded']}"
    (event,) = [json.loads(line) for line in report["events"].splitlines()]
    assert event["event_status"] == "Warning" and "timeout on orders" in event["description"]


_SENDING_DRIVER = _COMMON + r"""
importers = []

def hook(event, args):
    if event == "import" and args[0].split(".")[0] == "aiohttp":  # its submodules (the package is lazy)
        importers.append(threading.current_thread().name)

sys.addaudithook(hook)

async def main():
    config_path, log_path = sys.argv[1:3]
    agent, stop, task = await started_agent(config_path)
    for _ in range(500):  # ready, nothing to send yet: the client is imported in the background anyway
        if sys.modules.get("aiohttp.client") is not None:
            break
        await asyncio.sleep(0.02)
    imported_before_any_event = sys.modules.get("aiohttp.client") is not None
    with open(log_path, "a") as fh:
        fh.write("ERROR timeout on orders id=7\n")
    for _ in range(1500):
        if agent.status()["outputs"]["default"]["sent"] >= 1:
            break
        await asyncio.sleep(0.02)
    report = {"importers": importers, "imported_before_any_event": imported_before_any_event,
              "loop_thread": threading.current_thread().name,
              "sent": agent.status()["outputs"]["default"]["sent"]}
    stop.set()
    await task
    print(json.dumps(report))

run_async(main())
"""


def test_an_agent_that_sends_imports_the_http_client_off_the_event_loop(tmp_path: Path) -> None:
    """aiohttp (~0.2 s, ~10 MiB) is imported in a worker thread once an agent with a push URL is ready: imported
    by the event loop at the first event it stalled every source's pipeline for that long, and imported then
    even in a thread it slowed the burst that produced the event by a fifth (bench/growth.py's scan)."""
    fake = subprocess.Popen([sys.executable, "-m", "tests.fake_flashduty", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fake.stderr is not None and fake.stdout is not None
        url = fake.stderr.readline().split("listening on ", 1)[1].strip()
        logs = tmp_path / "logs"
        logs.mkdir()
        app = logs / "app.log"
        app.write_text("INFO boot\n")
        config = tmp_path / "config.yaml"
        config.write_text(textwrap.dedent(f"""\
            state_dir: {tmp_path}/state
            flashduty:
              push_url: "{url}"
            health:
              listen: 127.0.0.1:{free_port()}
            logs:
              - name: app
                paths: ["{logs}/*.log"]
                rules:
                  - name: db-timeout
                    match: 'timeout on (?P<db>\\w+) id=(?P<id>\\d+)'
            """))
        config.chmod(0o600)
        res = subprocess.run([sys.executable, "-c", _SENDING_DRIVER, str(config), str(app)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout.strip().splitlines()[-1])
        received = json.loads(fake.stdout.readline())
    finally:
        fake.terminate()
        fake.wait(10)
    assert report["sent"] == 1 and "timeout on orders" in received["event"]["description"]
    assert report["imported_before_any_event"], "the client waited for the first event"
    assert report["importers"] and report["loop_thread"] not in report["importers"], report
