"""The ``self_alerts:`` section: the agent's own blind spots as alerts (on by default)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.units import Duration


class SelfAlertsConfig(BaseModel):
    """`self_alerts:` — what the agent cannot see or deliver, raised as alerts with an Ok when it clears."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    severity: Literal["Critical", "Warning", "Info"] = "Warning"
    output: str | None = None  # default: the first flashduty output
    lag: Duration = Field(default=300.0, gt=0)  # a source with bytes on disk unread for this long
    unreadable_after: Duration = Field(default=30.0, ge=0)  # a watched file that cannot be read, this long
    unavailable_after: Duration = Field(default=30.0, ge=0)  # journald unavailable; files not tailed (fds)
    config_invalid_after: Duration = Field(default=60.0, ge=0)  # the config file refused, this long
    quiet: Duration = Field(default=600.0, gt=0)  # an incident (data lost, events dropped) resolves after this
    interval: Duration = Field(default=10.0, gt=0)  # how often the agent looks at itself (reads every source's status)
