"""The ``self_alerts:`` section: the agent's own blind spots as alerts (on by default)."""

from __future__ import annotations

from typing import Literal

from agent.model import Model
from agent.units import Duration


class SelfAlertsConfig(Model):
    """`self_alerts:` — what the agent cannot see or deliver, raised as alerts with an Ok when it clears."""

    enabled: bool = True
    severity: Literal["Critical", "Warning", "Info"] = "Warning"
    output: str | None = None  # default: the first flashduty output
    lag: Duration = 300.0  # a source with bytes on disk unread for this long
    unreadable_after: Duration = 30.0  # a watched file that cannot be read, this long
    unavailable_after: Duration = 30.0  # journald unavailable; files not tailed (fds)
    config_invalid_after: Duration = 60.0  # the config file refused, this long
    quiet: Duration = 600.0  # an incident (data lost, events dropped) resolves after this
    interval: Duration = 10.0  # how often the agent looks at itself (reads every source's status)

    def __post_init__(self) -> None:
        self.require_positive("lag", "quiet", "interval")
