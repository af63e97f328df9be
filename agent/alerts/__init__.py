"""Alerts: rule matches and check observations in, Flashduty events out, once per state change."""

from agent.alerts.engine import AlertEngine, AlertsConfig, AlertState, hit_events

__all__ = ["AlertEngine", "AlertState", "AlertsConfig", "hit_events"]
