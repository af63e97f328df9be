"""Alerts: rule matches and check observations in, Flashduty events out, once per state change.

A log that repeats one error 10,000 times becomes one alert that opens (``Critical``), may remind while it
continues, and closes by itself with ``Ok`` when the error stops; a check's alert follows its status.
The agent needs only this package's public API: the ``alerts:`` config model (``AlertsConfig``), and
``AlertEngine``, which takes matches (``on_match``, ``on_resolve_match``, or a batch with ``hit_events``),
check observations (``on_check``) and the clock (``tick``), and returns the events to queue; ``commit``
wraps them with the state changes to persist in the same outbox transaction.

Inside, one module per concern: ``state`` (what is remembered and persisted), ``render`` (template
values, labels, the event body), ``storm`` (rate caps and the storm-control alert), one lifecycle module
per kind of alert (``log_rule``, ``check``, speaking ``lifecycle``'s steps), and ``engine``, which routes
inputs to them and carries out their steps.
"""

from agent.alerts.config import AlertsConfig
from agent.alerts.engine import AlertEngine, hit_events
from agent.alerts.lifecycle import Resolve, Step
from agent.alerts.log_rule import RuleLike
from agent.alerts.state import AlertState, EngineStats, Kind

__all__ = [
    "AlertEngine",
    "AlertState",
    "AlertsConfig",
    "EngineStats",
    "Kind",
    "Resolve",
    "RuleLike",
    "Step",
    "hit_events",
]
