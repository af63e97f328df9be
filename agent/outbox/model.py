"""What flows through the outbox: changes handed to the writer, rows handed to senders, and its counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.events import json_text


def encode_body(body: dict[str, Any]) -> str:
    """The exact JSON text stored and later POSTed (compact; sizes in the bounds are of this text)."""
    return json_text(body)


@dataclass(slots=True)
class QueuedEvent:
    output: str
    alert_key: str
    body: dict[str, Any]


@dataclass(slots=True)
class PendingEvent:
    """An event as the sender sees it."""

    id: int
    output: str
    alert_key: str
    body: str
    created: float
    attempts: int
    next_attempt: float


@dataclass(slots=True)
class Commit:
    """Everything one source batch changes, applied atomically."""

    events: list[QueuedEvent] = field(default_factory=list)
    checkpoints: list[tuple[str, str, str]] = field(default_factory=list)  # (source, key, state)
    forget_checkpoints: list[tuple[str, str]] = field(default_factory=list)  # (source, key)
    alerts: list[tuple[str, str]] = field(default_factory=list)  # (alert_key, state json)
    forget_alerts: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.events or self.checkpoints or self.forget_checkpoints or self.alerts or self.forget_alerts)


@dataclass(slots=True)
class Reassert:
    """Queue a key's latest delivered event again unless an event of that key is still queued.

    A step of the ordered writer, not a write of its own: the check and the insert run in the writer's
    transaction, at the step's place in submission order, and ``latest_body`` is asked for the body only
    when the group holding the step is handed to the store thread (the argument that this never re-sends
    an older state is in ``Writer._hand_off``). Its body is not counted by ``on_full: block_sources``
    (it is not known before the hand-off; one event).
    """

    output: str
    alert_key: str
    latest_body: Callable[[], str | None]  # the key's latest delivered body (exact JSON text), asked at hand-off
    body: str | None = None  # as resolved at hand-off
    queued: bool = False  # set by the store: the body was queued again (False: the key had a queued event)

    @property
    def events(self) -> list[QueuedEvent]:  # a reassert is not counted against the writer's event bound
        return []

    def empty(self) -> bool:
        return False


Change = Commit | Reassert


@dataclass(slots=True)
class OutboxStats:
    depth: int = 0
    bytes: int = 0
    dead_letters: int = 0
    committed_events: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count
    disk_full: bool = False
    last_error: str = ""
    store_reset: str = ""  # path the corrupt store was moved to, if that happened
    store_recreated: str = ""  # what happened when the store file was deleted while in use
    store_recreated_at: float = 0.0


class OutboxFull(Exception):
    """Raised for changes the writer gives up on because the agent is shutting down: the store cannot write
    (disk full) or, with ``on_full: block_sources``, has no room. Their checkpoints stay uncommitted, so the
    lines are read again after the restart."""
