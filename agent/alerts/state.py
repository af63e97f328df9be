"""What the engine remembers: one ``AlertState`` per alert identity, and the counters behind the metrics.

An open alert must get its ``Ok`` even after a restart or after its rule was edited, so a state carries
everything needed to remind and resolve it (rendered title, labels, output, quiet period) instead of
pointing back at the rule. The persisted form is the JSON of these fields; a stored row written by an
older release loads as long as the names it has still exist here.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field, fields
from typing import Literal

from agent.events import Status, json_text

Kind = Literal["log", "check", "storm", "absent", "expect", "self"]
TIMED_KINDS = ("absent", "expect")
"""Kinds whose states are kept (and persisted) while not firing: their clock is the point."""


@dataclass(slots=True)
class AlertState:
    """One alert identity. Everything needed to remind and resolve it is here, even if the rule changes."""

    key: str
    kind: Kind
    source: str
    name: str  # rule or check name
    output: str
    severity: Status = "Warning"
    firing: bool = False
    notified: bool = False  # the server has this alert open (a non-Ok event went out)
    owed: bool = False  # storm control held back an update that is still to be sent
    first_seen: float = 0.0
    last_seen: float = 0.0
    count: int = 0
    last_notified: float = 0.0
    title: str = ""
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    max_samples: int = 3
    resolve_after: float | None = None
    repeat_interval: float = 0.0
    suppressed: int = 0
    flapping: bool = False
    window: list[float] = field(default_factory=list)  # match times while pending (threshold not reached)
    deadline: float = 0.0  # absent / expect: when the wait runs out (0: no timer)
    wait: float = 0.0  # absent / expect: the rule's `after` / `within` the deadline was set with
    held_since: float = 0.0  # absent / expect: due, but held since then while the source is behind

    def to_json(self) -> str:
        # field by field: dataclasses.asdict deep-copies recursively and showed up in the hot path
        return json_text({name: getattr(self, name) for name in _PERSISTED_FIELDS})

    @classmethod
    def from_json(cls, text: str) -> AlertState:
        data = json.loads(text)
        allowed = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in allowed})


# samples only feed the description when the alert fires, which has happened by the time it is persisted
_PERSISTED_FIELDS = [f.name for f in fields(AlertState) if f.name not in ("window", "samples", "held_since")]


@dataclass(slots=True)
class EngineStats:
    """Counters the health endpoint and the metrics read (``engine.stats``)."""

    events: collections.Counter[str] = field(default_factory=collections.Counter)  # by status
    suppressed: collections.Counter[str] = field(default_factory=collections.Counter)  # by reason
    matches: collections.Counter[str] = field(default_factory=collections.Counter)  # "source/rule"
