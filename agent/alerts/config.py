"""The ``alerts:`` section of the config file: defaults and caps shared by every rule and check.

A model of its own (the engine, storm control and the capacity check all read it) so that the file format
is one short page to review, apart from the state machine that acts on it. ``RuleLike``, what the engine
needs of a rule, lives with the log-rule lifecycle that uses it.
"""

from __future__ import annotations

from typing import Annotated

from agent.model import Meta, Model
from agent.units import Duration


class AlertsConfig(Model):
    """`alerts:` — defaults and storm control shared by every rule and check."""

    default_resolve_after: Duration = 600.0  # quiet period for log rules that set neither resolve.after nor .match
    max_events_per_key_per_minute: Annotated[int, Meta(ge=1)] = 6
    max_events_per_minute: Annotated[int, Meta(ge=1)] = 300
    # Alerts tracked at once (open, or pending a threshold). Bounds memory (~1.5 KiB each) when a backlog
    # holds many distinct identities; past half of it a log source pauses while open alerts are about to
    # resolve, and at the cap a new identity is suppressed (counted, logged, summarised) instead of tracked.
    max_open_alerts: Annotated[int, Meta(ge=4)] = 20_000
