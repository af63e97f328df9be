"""Helpers shared by the alerts tests: an engine on a test clock, rules fed through the real matcher, and
check observations as the scheduler builds them."""

from __future__ import annotations

from typing import Any

from agent.alerts import AlertEngine, AlertsConfig, hit_events
from agent.checks import CheckObservation, CheckResult
from agent.checks.result import RawStatus, template_fields
from agent.events import Status
from agent.rules import RuleConfig, RuleSet
from tests.fake_flashduty import validate_event

T0 = 1_800_000_000.0  # the test clock: seconds after this instant


def make_engine(**overrides: Any) -> AlertEngine:
    config = AlertsConfig(**{"max_events_per_key_per_minute": 100, "max_events_per_minute": 1000, **overrides})
    return AlertEngine(config, host="web-1", global_labels={"env": "test"}, default_output="default")


def rule(**fields: Any) -> RuleConfig:
    base = {"name": "db", "match": r"timeout on (?P<db>\w+)", "identity": ["db"], "severity": "Critical"}
    return RuleConfig.model_validate({**base, **fields})


def tick(engine: AlertEngine, now: float) -> list[dict]:
    return [e.body for e in engine.tick(T0 + now)]


_COMPILED: dict[int, tuple[list[RuleConfig], RuleSet]] = {}


def feed(engine: AlertEngine, rules: list[RuleConfig], line: str, now: float) -> list[dict]:
    if id(rules) not in _COMPILED:
        _COMPILED[id(rules)] = (rules, RuleSet(rules))  # keep `rules` alive so its id stays unique
    hits = _COMPILED[id(rules)][1].evaluate([line])
    events = [e.body for e in hit_events(engine, "app", rules, "/var/log/app.log", hits, T0 + now)]
    for body in events:
        assert validate_event(body) == [], body
    return events


def statuses(events: list[dict]) -> list[str]:
    return [e["event_status"] for e in events]


_RAW: dict[Status, RawStatus] = {"Ok": "OK", "Warning": "WARNING", "Critical": "CRITICAL", "Info": "UNKNOWN"}


def observation(check: str, status: Status, summary: str = "", *, flapping: bool = False,
                flapping_changed: bool = False) -> CheckObservation:
    """An observation as ``agent.checks.scheduler.observe`` builds it, with the effective status given."""
    result = CheckResult(_RAW[status], summary or f"{check} is {status}", long_output="details")
    fields = {"check": check, "status": status, **template_fields(result),
              "flapping": "true" if flapping else "false", "flap_percent": "0.0"}
    return CheckObservation(check=check, status=status, result=result, fields=fields, changed=True,
                            flapping=flapping, flapping_changed=flapping_changed)
