"""The rule stage in worker processes (agent/rules/processes.py): real spawned workers give the answer the
agent process gives, a killed worker loses no batch, and the real agent matches a structured backlog in them
(events at the Flashduty-validating endpoint, counted in /metrics, shown in /status)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import LogSourceConfig
from agent.lines import LineChunk
from agent.rules import RuleSet
from agent.rules.candidates import write_out_escapes
from agent.rules.processes import RuleProcesses
from tests.conftest import wait_until
from tests.fake_flashduty import FakeFlashduty, validate_event
from tests.ops_helpers import events_named, metric, metrics, status
from tests.test_format_agent import HEAD

RULES = [
    {"name": "checkout-5xx", "where": {"service": "checkout", "req.status": {"gte": 500}}, "identity": ["req.path"]},
    {"name": "declined", "match": "payment (declined|failed)", "where": {"level": {"in": ["warn", "error"]}}},
    {"name": "refused", "match": "paiement refusé"},
    {"name": "admin-delete", "where": {"req.method": "DELETE", "req.path": {"match": "^/admin/"}}},
]


def record_line(rng: random.Random, n: int) -> str:
    service = rng.choice(["checkout", "search", "payments", "auth"])
    msg = rng.choice(["ok", "payment declined", "paiement refusé", "slow query", "payment failed"])
    rec = {"n": n, "service": service, "level": rng.choice(["info", "warn", "error"]), "msg": msg,
           "req": {"method": rng.choice(["GET", "POST", "DELETE"]), "path": rng.choice(["/admin/x", "/api/y"]),
                   "status": rng.choice([200, 200, 404, 500, 503])}}
    roll = rng.random()
    if roll < 0.05:
        return "not json: payment declined"  # a parse error, matched as plain text
    if roll < 0.15:
        return orjson.dumps(rec).decode().replace("é", "\\u00e9").replace("/", "\\u002f")  # escapes hide literals
    return orjson.dumps(rec).decode()


def chunks(count: int, lines: int, seed: int = 7) -> list[LineChunk]:
    rng = random.Random(seed)
    out = []
    for c in range(count):
        data = "\n".join(record_line(rng, c * lines + i) for i in range(lines)).encode()
        out.append(LineChunk(data, lines, ascii=data.isascii()))
    return out


def ruleset() -> RuleSet:
    cfg = LogSourceConfig.model_validate({"name": "api", "paths": ["/x.log"], "format": "json", "rules": RULES})
    return cfg.compile_rules()


def plain(hits: Any) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    return [(h.rule, h.kind, h.line, h.groups) for h in hits], dict(hits.parse_errors)


async def started(rules: RuleSet, **kw: Any) -> RuleProcesses:
    processes = RuleProcesses(rules, **{"processes": 2, "slots": 3, "slot_bytes": 1 << 20, **kw})
    await wait_until(lambda: processes.ready or processes.broken, timeout=60, what="rule processes started")
    assert processes.ready
    return processes


async def test_workers_answer_exactly_as_the_agent_process() -> None:
    rules = ruleset()
    assert rules.offloadable
    work = chunks(12, 2000)
    expected = [plain(rules.evaluate(c, None, None, "/x.log")) for c in work]
    assert sum(len(hits) for hits, _ in expected) > 100 and any(errors for _, errors in expected)
    processes = await started(rules)
    try:
        got = []
        for c in work:
            future = processes.evaluate(c, "/x.log")
            while future is None:  # every slot in use: wait for one (the pipeline uses a thread instead)
                await asyncio.sleep(0.005)
                future = processes.evaluate(c, "/x.log")
            got.append(future)
        assert [plain(await f) for f in got] == expected
        assert processes.batches == len(work) and processes.failures == 0
        assert len(processes.pids) == 2 and os.getpid() not in processes.pids
    finally:
        processes.close()


def _worker_plan() -> dict[int, int] | None:
    """Run in a worker: the prefilter plan it uses (None while it is still sampling)."""
    from agent.rules import processes

    assert processes._rules is not None
    return processes._rules.learned_plan()


async def test_a_worker_adopts_the_plan_the_agent_learned_instead_of_sampling() -> None:
    rules = ruleset()
    work = chunks(4, 2000, seed=5)
    expected = [plain(rules.evaluate(c, None, None, "/x.log")) for c in work[:3]]  # 6,000 lines: learned
    plan = rules.learned_plan()
    assert plan is not None
    processes = await started(rules, processes=1)
    try:
        assert await asyncio.wrap_future(processes._pool.submit(_worker_plan)) is None  # nothing seen yet
        future = processes.evaluate(work[0], "/x.log")  # 2,000 lines: fewer than it would sample itself
        assert future is not None and plain(await future) == expected[0]
        assert await asyncio.wrap_future(processes._pool.submit(_worker_plan)) == plan
    finally:
        processes.close()


async def test_a_chunk_larger_than_a_slot_is_left_to_the_caller() -> None:
    processes = await started(ruleset(), slot_bytes=4096)
    try:
        big = chunks(1, 200)[0]
        assert len(big.data) > 4096
        assert processes.evaluate(big, "/x.log") is None
    finally:
        processes.close()


async def test_a_killed_worker_loses_no_batch() -> None:
    rules = ruleset()
    work = chunks(6, 1000, seed=11)
    expected = [plain(rules.evaluate(c, None, None, "/x.log")) for c in work]
    processes = await started(rules)
    try:
        os.kill(processes.pids[0], signal.SIGKILL)
        answered = 0
        for c, want in zip(work, expected, strict=True):
            future = processes.evaluate(c, "/x.log")
            if future is not None:  # submitted before the pool noticed: the answer comes from a thread
                assert plain(await future) == want
                answered += 1
        await wait_until(lambda: processes.broken, timeout=30, what="the pool noticed the dead worker")
        assert processes.evaluate(work[0], "/x.log") is None  # broken: the caller uses a thread from now on
        assert processes.failures == answered
    finally:
        processes.close()


@pytest.mark.parametrize(("line", "written"), [
    ('{"msg":"paiement refus\\u00e9"}', '{"msg":"paiement refusé"}'),
    ('{"p":"\\u002fadmin\\u002f"}', '{"p":"/admin/"}'),
    ('{"k":"a\\\\u00e9"}', None),  # an escaped backslash, then the text u00e9: stays a candidate for all
    ('{"k":"\\u0022quoted\\u0022"}', None),  # a quote must stay escaped
    ('{"k":"\\u0001"}', None),  # a control character too
    ('{"k":"\\ud83d\\ude00"}', None),  # a surrogate pair
    ('{"k":"\\\\\\u00e9"}', '{"k":"\\\\é"}'),  # an escaped backslash, then an escape
])
def test_escapes_are_written_out_only_where_the_record_stays_the_same(line: str, written: str | None) -> None:
    assert write_out_escapes(line) == written
    if written is not None:
        assert orjson.loads(written) == orjson.loads(line)


# ------------------------------------------------------------------------------------------ the real agent
CONFIG = "rule_processes: {processes}\n" + HEAD + """\
logs:
  - name: api
    paths: ["./logs/api.log"]
    start_at: beginning
    format: json
    rules:
      - name: planted
        where: {{service: checkout, req.status: {{gte: 500}}}}
        identity: [trace]
        title: "5xx {{trace}}"
"""


def children(pid: int) -> list[int]:
    """The rule processes of the agent ``pid`` (its children running multiprocessing's spawn entry point)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def backlog(path: Path, lines: int, planted_every: int, tag: str) -> list[str]:
    """``lines`` JSON records appended to ``path``; every ``planted_every``-th one matches the rule with a unique
    trace."""
    rng = random.Random(3)
    planted = []
    with path.open("a") as f:
        for i in range(lines):
            rec: dict[str, Any] = {"service": rng.choice(["search", "checkout"]), "msg": "x" * 150,
                                   "req": {"status": rng.choice([200, 404])}}
            if i % planted_every == 0:
                rec = {**rec, "service": "checkout", "req": {"status": 503}, "trace": f"{tag}{i}"}
                planted.append(f"{tag}{i}")
            f.write(orjson.dumps(rec).decode() + "\n")
    return planted


@pytest.mark.parametrize("processes", [2, 0])
async def test_the_agent_matches_a_structured_backlog_in_rule_processes(
        tmp_path: Path, fake: FakeFlashduty, agent_process: Any, processes: int) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "api.log"
    planted = backlog(log, 60_000, 1500, "a")  # ~12 MiB: a dozen 1 MiB batches (threads, while workers start)
    agent = agent_process(CONFIG.format(url=fake.url, processes=processes))
    agent.start()
    await agent.wait_ready()
    await fake.wait_for_events(len(planted), timeout=60)
    if processes:
        await wait_until(lambda: events_named(agent, "rule_processes_started"), timeout=30,
                         what="rule processes started")
    planted += backlog(log, 60_000, 1500, "b")  # a second backlog, with the workers up
    await fake.wait_for_events(len(planted), timeout=60)
    for event in fake.events:
        assert validate_event(event) == []
    assert sorted(e["title_rule"] for e in fake.events) == sorted(f"5xx {t}" for t in planted)
    text = await metrics(agent)
    in_processes = metric(text, "dutytail_rule_process_batches_total", source="api") or 0
    if processes:
        assert in_processes > 0
        assert (metric(text, "dutytail_rule_process_failures_total", source="api") or 0) == 0
        assert (await status(agent))["sources"]["api"]["rule_processes"] == processes  # until 30 s idle
        workers = children(agent.proc.pid)
        assert len(workers) == processes
        agent.proc.kill()  # no orderly stop: the kernel takes the workers along (PR_SET_PDEATHSIG)
        agent.proc.wait()
        await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=10,
                         what="the rule processes of a killed agent exited")
    else:
        assert in_processes == 0
        assert (await status(agent))["sources"]["api"]["rule_processes"] == 0
        assert agent.stop() == 0


async def test_an_orderly_stop_ends_the_rule_processes(tmp_path: Path, fake: FakeFlashduty,
                                                       agent_process: Any) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "api.log"
    planted = backlog(log, 30_000, 1500, "a")
    agent = agent_process(CONFIG.format(url=fake.url, processes=2))
    agent.start()
    await agent.wait_ready()
    await fake.wait_for_events(len(planted), timeout=60)
    await wait_until(lambda: children(agent.proc.pid), timeout=30, what="rule processes started")
    workers = children(agent.proc.pid)
    assert agent.stop() == 0
    await wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), timeout=10,
                     what="the rule processes exited with the agent")


def test_rule_processes_config() -> None:
    from agent.config import ConfigError, parse_config

    assert parse_config("rule_processes: 0\n", "cfg.yaml").processes() == 0
    assert parse_config("rule_processes: 3\n", "cfg.yaml").processes() == 3
    cpus = len(os.sched_getaffinity(0))
    assert parse_config("{}\n", "cfg.yaml").processes() == (0 if cpus < 2 else min(cpus, 4))
    for bad in ("rule_processes: -1\n", "rule_processes: many\n"):
        with pytest.raises(ConfigError) as info:
            parse_config(bad, "cfg.yaml")
        assert "cfg.yaml:1:" in str(info.value) and "rule_processes" in str(info.value)
