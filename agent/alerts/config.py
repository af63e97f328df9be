"""The ``alerts:`` section of the config file: defaults and caps shared by every rule and check.

A model of its own (the engine, storm control and the capacity check all read it) so that the file format
is one short page to review, apart from the state machine that acts on it. ``RuleLike``, what the engine
needs of a rule, lives with the log-rule lifecycle that uses it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agent.units import Duration


class AlertsConfig(BaseModel):
    """`alerts:` — defaults and storm control shared by every rule and check."""

    model_config = ConfigDict(extra="forbid")

    default_resolve_after: Duration = 600.0  # quiet period for log rules that set neither resolve.after nor .match
    max_events_per_key_per_minute: int = Field(default=6, ge=1)
    max_events_per_minute: int = Field(default=300, ge=1)
    # Alerts tracked at once (open, or pending a threshold). Bounds memory (~1.5 KiB each) when a backlog
    # holds many distinct identities; past half of it a log source pauses while open alerts are about to
    # resolve, and at the cap a new identity is suppressed (counted, logged, summarised) instead of tracked.
    max_open_alerts: int = Field(default=20_000, ge=4)
