"""A rule whose regex backtracks catastrophically cannot stop the agent: its confirmation runs in a child with a
per-line budget; the line is abandoned, counted and logged, and everything else carries on."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from agent.match import MultiMatcher
from agent.match.guard import LINE_BUDGET, Guard, risk
from tests.fake_flashduty import FakeFlashduty
from tests.ops_helpers import append, eventually, http_get, metric, metrics

EVIL = r"(a+)+(?=z)"


@pytest.mark.parametrize(("pattern", "risky"), [
    (EVIL, True), (r"(a|aa)*b", True), (r"^(\d+)*$", True), (r"(.)\1", True), (r"x.*y.*z.*w", True),
    (r"timeout after (?P<ms>\d+)ms on (?P<db>\w+)", False), (r"ERROR .* failed", False), (r"[a-z]+\d{2,4}", False),
])
def test_shapes_that_backtrack_are_recognised(pattern: str, risky: bool) -> None:
    assert bool(risk(pattern)) is risky


def test_guarded_answers_are_those_of_re() -> None:
    patterns = [r"(?P<word>\w+)+!", r"(x|xy)*z", r"(a)(b)?\1"]
    guard = Guard(patterns)
    try:
        for i, pattern in enumerate(patterns):
            for line in ("hello world!", "xyxyz", "aba", "aa", "", "nothing here"):
                want, got = re.search(pattern, line), guard.search(i, line)
                assert (want is None) == (got is None), (pattern, line)
                if want is not None and got is not None:
                    assert (got.span(), got.groups(), got.groupdict(), got.group(), got.string) == (
                        want.span(), want.groups(), want.groupdict(), want.group(), want.string)
    finally:
        guard.close()


def test_a_line_over_budget_is_abandoned_and_the_next_one_is_answered() -> None:
    matcher = MultiMatcher([EVIL, r"ok (?P<n>\d+)"])
    lines = ["a" * 40, "ok 7", "aaaz"]
    found = matcher.scan(lines)
    assert [(i, j) for i, j, _m in found] == [(1, 1), (2, 0)]
    assert matcher.abandoned() == {0: 1}
    assert found[1][2].group() == "aaa"
    guarded = matcher.describe()["guarded"]
    assert guarded == [{"index": 0, "pattern": EVIL, "reason": "a quantifier inside a quantifier", "abandoned": 1}]
    assert LINE_BUDGET < 1


async def _agent_with_an_evil_rule(tmp_path: Path, fake: FakeFlashduty, agent_process: Any) -> tuple[Any, Path]:
    """A ready agent process whose `app` source has the guarded `evil` rule and a plain `fine` one."""
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "app.log"
    log.write_text("")
    agent = agent_process(f"""
state_dir: ./state
flashduty: {{push_url: "{fake.url}"}}
health: {{listen: "127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}"}}
logs:
  - name: app
    paths: ["{log}"]
    rules:
      - name: evil
        match: '{EVIL}'
      - name: fine
        match: 'ERROR (?P<code>\\w+)'
        identity: [code]
""")
    agent.start()
    await agent.wait_ready()
    return agent, log


async def test_the_agent_keeps_serving_while_a_rule_backtracks(tmp_path: Path, fake: FakeFlashduty,
                                                               agent_process: Any) -> None:
    agent, log = await _agent_with_an_evil_rule(tmp_path, fake, agent_process)
    append(log, "a" * 40, "ERROR E1")  # 40 a's: days of backtracking for plain re
    for _ in range(5):  # the loop answers throughout (2 s per request)
        assert (await asyncio.to_thread(http_get, agent.health_url + "/healthz", None, 2.0)).status == 200
    await fake.wait_for_events(1, timeout=10)
    assert fake.events[0]["labels"]["rule"] == "fine"

    async def abandoned() -> float | None:
        return metric(await metrics(agent), "dutytail_lines_abandoned_total", source="app", rule="evil")

    assert await eventually(abandoned, 5, "the abandoned line counted") == 1
    assert "regex_line_abandoned" in agent.logs()
    assert agent.stop() == 0


async def test_the_regex_worker_dies_with_a_killed_agent(tmp_path: Path, fake: FakeFlashduty,
                                                        agent_process: Any) -> None:
    """An agent killed without a clean stop while its worker backtracks must not leave the worker spinning."""
    import psutil

    agent, log = await _agent_with_an_evil_rule(tmp_path, fake, agent_process)
    append(log, "a" * 40)  # the worker backtracks on it (days for plain re) until the budget kills it

    def worker() -> list[psutil.Process]:
        return [p for p in psutil.Process(agent.proc.pid).children() if "pickle" in " ".join(p.cmdline())]

    (child,) = await eventually(lambda: worker() or None, 10, "the regex worker running")
    try:
        agent.kill9()
        assert await eventually(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, 10,
                                "the worker gone with the agent")
    finally:
        if child.is_running():
            child.kill()  # a failing run must not leave it spinning for days
