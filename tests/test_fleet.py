"""A fleet on one integration (issue: a correlated incident, hundreds of agents, one integration's limits).

The full measurement is ``bench/fleet.py`` (20 agents x 75 events and 50 x 40 against Flashduty's 100/s and
1,000/min, ~2 min each; results in bench/RESULTS.md). Here, in reduced form:

* real agent processes, each its own host, state and log, burst at the same moment into one fake
  integration whose limits are scaled down so that the burst is refused in part (429) yet fits its minute;
  nothing may be lost or duplicated;
* the sender's ``FleetShare`` driven by a simulated fleet on a virtual clock with the real limits, where
  both of the integration's windows fill (the 60 s one included), in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.sender import SlidingWindowLimiter
from agent.sender.share import FleetShare
from tests.chaos_helpers import stop_agent
from tests.conftest import AgentProcess
from tests.fake_flashduty import FakeFlashduty, ideal_drain

AGENTS = 5
EVENTS = 8  # per agent
PER_SECOND = 10  # the fake integration's limits, scaled down: the burst is 4x its per-second limit
PER_MINUTE = AGENTS * EVENTS  # ... and exactly fits its minute

CONFIG = """\
state_dir: ./state
host: {host}
shutdown_timeout: 5s
flashduty:
  push_url: {url}
health:
  listen: 127.0.0.1:${{DUTYTAIL_TEST_HEALTH_PORT}}
alerts:
  default_resolve_after: 1d
logs:
  - name: app
    paths: ["./logs/*.log"]
    start_at: beginning
    rules:
      - name: incident
        match: 'incident: upstream (?P<upstream>\\w+) unreachable id=(?P<id>\\d+)'
        identity: [id]
        severity: Critical
        title: "upstream {{upstream}} unreachable"
"""


def burst(host: str, count: int) -> bytes:
    return "".join(f"2026-11-27T08:00:00Z {host} app[71]: incident: upstream db unreachable id={i}\n"
                   for i in range(count)).encode()


async def test_fleet_burst_into_one_integration_loses_nothing(tmp_path: Path) -> None:
    async with FakeFlashduty(per_second=PER_SECOND, per_minute=PER_MINUTE) as fake:
        agents: list[AgentProcess] = []
        logs: list[Path] = []
        try:
            for a in range(AGENTS):
                host = f"fleet-{a}"
                workdir = tmp_path / host
                (workdir / "logs").mkdir(parents=True)
                log = workdir / "logs" / "app.log"
                log.touch()
                logs.append(log)
                agent = AgentProcess(workdir, CONFIG.format(host=host, url=fake.url))
                agents.append(agent)
                agent.start()
            for agent in agents:
                await agent.wait_ready(60)
            await asyncio.sleep(1.0)  # every tailer on its file
            # the correlated incident: every agent's burst at the same moment (agents' own pacing is the
            # default 100/s, so together they are far over the integration's 10/s)
            bodies = [burst(f"fleet-{a}", EVENTS) for a in range(AGENTS)]
            started = time.monotonic()
            for path, body in zip(logs, bodies, strict=True):
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                os.write(fd, body)
                os.close(fd)
            expected = {(f"fleet-{a}", str(i)) for a in range(AGENTS) for i in range(EVENTS)}

            def delivered() -> collections.Counter[tuple[str, str]]:
                return collections.Counter((e["labels"]["host"], e["labels"]["id"]) for e in fake.events
                                           if e.get("labels", {}).get("rule") == "incident")

            await fake.wait_until(lambda: expected.issubset(delivered()), 30)
            drain = time.monotonic() - started
            await asyncio.sleep(1.0)  # a duplicate, if any, arrives too
            got = delivered()
            lost = expected - set(got)
            duplicates = sum(got.values()) - len(got)
            assert not lost and duplicates == 0, f"lost {sorted(lost)}, {duplicates} duplicates"
            assert set(got) == expected
            assert fake.rate_limited > 0, "the integration never had to refuse: no fleet scenario"
            assert fake.violations == []
            # the fleet converges instead of hammering: far fewer 429s than events (each agent alone
            # would burst its 8 at once, 4 at a time)
            assert fake.rate_limited <= 2 * AGENTS * EVENTS, fake.describe()
            assert drain < 25, f"drained in {drain:.1f}s (ideal {(AGENTS * EVENTS - 1) // PER_SECOND}s)"
            for agent in agents:
                assert await stop_agent(agent) == 0
        finally:
            for agent in agents:
                agent.cleanup()


# --------------------------------------------------------------------------------------------------
# FleetShare in a simulated fleet (virtual clock): both windows fill, the 60 s one included
# --------------------------------------------------------------------------------------------------


class Integration:
    """Flashduty's limits as the fake counts them: sliding windows of accepted requests."""

    def __init__(self, per_second: int, per_minute: int) -> None:
        self.limits = [(per_second, 1.0, collections.deque[float]()), (per_minute, 60.0, collections.deque[float]())]
        self.accepted: list[float] = []
        self.refused: list[float] = []

    def post(self, now: float) -> bool:
        for _, window, stamps in self.limits:
            while stamps and stamps[0] <= now - window:
                stamps.popleft()
        if any(len(stamps) >= count for count, _, stamps in self.limits):
            self.refused.append(now)
            return False
        for _, _, stamps in self.limits:
            stamps.append(now)
        self.accepted.append(now)
        return True


def simulate_fleet(n_agents: int, events: int, seed: int, *, concurrency: int = 4) -> tuple[float, Integration]:
    """Agents that each keep to 100/s and 1,000/min and follow the sender's rules on 429 (the share paces
    when it can, else full-jitter backoff capped at the share's probe_cap), on one integration."""
    rng = random.Random(seed)
    integration = Integration(100, 1000)
    queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
    counter = iter(range(10**9))

    def at(when: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(queue, (when, next(counter), fn, args))

    class Agent:
        def __init__(self) -> None:
            self.rng = random.Random(rng.random())
            self.share = FleetShare([(100, 1.0), (1000, 60.0)], self.rng)
            self.own = [(100, 1.0, collections.deque[float]()), (1000, 60.0, collections.deque[float]())]
            self.left = events
            self.retry_at: list[float] = [0.0] * events
            self.in_flight = 0
            self.backoff_until = 0.0
            self.failures = 0
            self.last_failure = -1.0
            self.woken_at: float | None = None

        def limiter_wait(self, now: float) -> float | None:  # SlidingWindowLimiter._wait_needed
            wait = 0.0
            for count, window, stamps in self.own:
                while stamps and stamps[0] <= now - window:
                    stamps.popleft()
                excess = len(stamps) + self.in_flight - count + 1
                if excess > len(stamps):
                    return None
                if excess > 0:
                    wait = max(wait, stamps[excess - 1] + window - now)
            shared = self.share.wait_needed(now, self.in_flight)
            return None if shared is None else max(wait, shared)

    def wake(agent: Agent, when: float) -> None:
        if agent.woken_at is None or when < agent.woken_at:
            agent.woken_at = when
            at(when, dispatch, agent)

    def dispatch(agent: Agent, now: float) -> None:
        agent.woken_at = None
        while agent.in_flight < concurrency and agent.retry_at:
            if now < agent.backoff_until:
                return wake(agent, agent.backoff_until)
            agent.retry_at.sort()
            if agent.retry_at[0] > now:
                return wake(agent, agent.retry_at[0])
            wait = agent.limiter_wait(now)
            if wait is None:
                return None  # an answer wakes it
            if wait > 0:
                return wake(agent, now + wait + 0.001)
            agent.retry_at.pop(0)
            agent.in_flight += 1
            rtt = agent.rng.uniform(0.004, 0.03)
            at(now + rtt / 2, arrive, agent, now, rtt)
        return None

    def arrive(agent: Agent, sent_at: float, rtt: float, now: float) -> None:
        at(now + rtt / 2, answer, agent, sent_at, integration.post(now))

    def answer(agent: Agent, sent_at: float, ok: bool, now: float) -> None:
        agent.in_flight -= 1
        for _, _, stamps in agent.own:
            stamps.append(now)
        if ok:
            agent.share.accepted(now)
            agent.left -= 1
            agent.failures = 0
        else:
            agent.share.rate_limited(sent_at, now)
            if sent_at >= agent.last_failure:
                agent.failures += 1
            agent.last_failure = now
            hold = agent.share.wait_needed(now, 0)
            if hold is None or hold > 0:
                delay = 0.0
                agent.backoff_until = min(agent.backoff_until, now)
            else:
                delay = agent.rng.uniform(0, min(agent.share.probe_cap, 2.0 ** (agent.failures - 1)))
                agent.backoff_until = max(agent.backoff_until, now + delay)
            agent.retry_at.append(now + delay)
        dispatch(agent, now)

    fleet = [Agent() for _ in range(n_agents)]
    for agent in fleet:  # each reads the incident's lines a little after the others
        at(rng.uniform(0.05, 0.6), dispatch, agent)
    while queue:
        when, _, fn, args = heapq.heappop(queue)
        if when > 600:
            break
        fn(*args, when)
    assert all(agent.left == 0 for agent in fleet), "an agent never got its events through"
    return max(integration.accepted), integration


def test_fleet_share_converges_on_both_windows_without_waves() -> None:
    for n_agents, events in ((20, 75), (50, 40)):
        total = n_agents * events
        ideal = ideal_drain(total, 100, 1000)
        for seed in (1, 2, 3):
            drain, integration = simulate_fleet(n_agents, events, seed)
            assert len(integration.accepted) == total
            assert drain <= 1.3 * ideal, f"{n_agents}x{events} seed {seed}: {drain:.1f}s vs ideal {ideal:.1f}s"
            # the full minute is waited out quietly: hardly any 429 while the 60 s window is full
            closed = [t for t in integration.refused if 20 < t < 59]
            assert len(closed) <= n_agents // 2, f"{len(closed)} 429s while the minute was full"
            # fewer 429s than one agent's plain exponential backoff gives (~10 per agent here)
            assert len(integration.refused) <= 8 * n_agents, len(integration.refused)


def test_fleet_share_alone_is_the_plain_limiter() -> None:
    """An output that never saw a 429 is paced by its configured limits only, after a slow start (one
    request at a time while nothing was accepted in the last second: the first answer says whether the
    way is clear)."""
    share = FleetShare([(100, 1.0), (1000, 60.0)], random.Random(1))
    assert share.wait_needed(0.0, 0) == 0.0
    assert share.wait_needed(0.0, 1) is None  # idle: one at a time
    share.accepted(0.01)
    assert share.wait_needed(0.02, 0) == 0.0
    for i in range(10):
        share.accepted(0.02 + i * 0.01)
    assert share.wait_needed(0.2, 4) == 0.0  # going: up to half of what was accepted in the last second
    assert share.budgets() == {"1s": None, "60s": None}


def test_fleet_share_cuts_the_full_window_and_waits_for_its_own_slots() -> None:
    share = FleetShare([(100, 1.0), (1000, 60.0)], random.Random(1))
    for i in range(40):  # 40 accepted in the first 4 s
        share.accepted(i * 0.1)
    share.rate_limited(4.0, 4.05)  # the 1 s window: cut to half of the 9 accepted in it
    assert share.budgets()["1s"] == 4.0
    assert 1.0 <= share.wait_needed(4.05, 0) <= 1.5  # the next try: once the window slid past (+ jitter)
    share.rate_limited(5.1, 5.12)  # refused again a window later...
    share.rate_limited(6.1, 6.15)  # ... and again: the minute is full, not the second
    assert share.budgets()["60s"] == 40.0
    assert share.budgets()["1s"] is None  # the 1 s cuts of this run were the minute's doing: undone
    wait = share.wait_needed(6.2, 0)
    assert wait is not None and abs(6.2 + wait - 60.0) < 0.01  # until its first accepted request leaves
    share.accepted(60.05)  # the window has slid open
    assert share.budgets()["60s"] is None
    share.forget()
    assert share.budgets() == {"1s": None, "60s": None}


async def test_limiter_waits_for_the_share() -> None:
    share = FleetShare([(100, 1.0), (1000, 60.0)], random.Random(1))
    limiter = SlidingWindowLimiter([(100, 1.0), (1000, 60.0)], share)
    now = time.monotonic()
    for i in range(4):
        share.accepted(now - 0.5 + i * 0.01)
    share.rate_limited(now - 0.01, now)  # cut to 2 of the 4 accepted in the last second
    started = time.monotonic()
    await limiter.acquire()  # waits for the 1 s window to slide past the refusal
    limiter.done()
    assert time.monotonic() - started >= 0.9
