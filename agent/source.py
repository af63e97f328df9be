"""The contract every source keeps with the rest of the agent: batches of records with a checkpoint.

A source (the file tailer in ``agent/tail/``, journald in ``agent/journal.py``) reads records and puts
:class:`Batch` objects on a bounded queue. Each batch carries the :class:`Checkpoint` right after its records;
the agent commits it in the same SQLite transaction as the events derived from the batch, and on restart
hands the last committed checkpoints back to a new source. So a source never persists anything itself, never
hands out a checkpoint past a record it has not handed out, and emits the batches of one stream in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where one stream of a source stands: ``key`` names the stream, ``state`` is the source's own JSON."""

    key: str
    state: str


@dataclass(slots=True)
class Batch:
    """Records of one stream, in order, and the checkpoint right after them."""

    source: str
    path: str
    lines: Sequence[str]
    """Complete records without their newline; a :class:`agent.lines.LineChunk` on the file fast path."""
    checkpoint: Checkpoint | None
    """Position after these lines; None when nothing needs persisting."""
    finished: bool = False
    """The stream is done for good (rotated away and fully read): its checkpoint is to be forgotten."""
    data: bytes | None = None
    """Optionally the same lines as UTF-8 bytes joined by ``b"\\n"`` (saves the matcher an encode)."""
    fields: list[dict[str, str]] | None = None
    """Optionally per-line fields for templates (journald: unit, priority, identifier, pid)."""


LOSSES_KEPT = 1000  # files whose losses are remembered (the oldest forgotten first)


@dataclass(slots=True)
class SourceStats:
    """Counters every source keeps (monotonic); the agent exports them per source to Prometheus."""

    lines_read: int = 0
    bytes_read: int = 0
    lines_truncated: int = 0
    bytes_replaced: int = 0
    """Invalid bytes for the configured encoding, replaced by U+FFFD."""
    bytes_skipped: int = 0
    """Bytes dropped from over-long lines (beyond ``max_line_bytes``)."""
    bytes_lost: int = 0
    """Known unread bytes that could not be read (truncated without a copy, rotated file gone)."""
    lost_by_path: dict[str, list[int]] = field(default_factory=dict)
    """Losses per file since start, ``[incidents, known unread bytes]`` (the self alert ``data_lost``).
    Written by the source's own thread; read a copy (``losses()``)."""

    def lost(self, path: str, unread: int) -> None:
        """Data of ``path`` could not be read (``unread`` known bytes; 0 when the amount is unknown)."""
        self.bytes_lost += unread
        entry = self.lost_by_path.setdefault(path, [0, 0])
        entry[0] += 1
        entry[1] += unread
        if len(self.lost_by_path) > LOSSES_KEPT:
            del self.lost_by_path[next(iter(self.lost_by_path))]

    def losses(self) -> dict[str, tuple[int, int]]:
        """A copy of ``lost_by_path`` taken from another thread (retried if it changed meanwhile)."""
        for _ in range(10):
            try:
                return {k: (v[0], v[1]) for k, v in list(self.lost_by_path.items())}
            except RuntimeError:  # changed size during the copy
                continue
        return {}

    def as_dict(self) -> dict[str, int]:
        """The counters (every int field), for metrics and status."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.type in ("int", int)}


class Source(Protocol):
    """What the agent needs of a source. Constructed with its config, the committed checkpoints
    (``dict[str, Checkpoint]``) and ``is_first_start`` (only then does ``start_at: end`` skip history)."""

    stats: SourceStats

    @property
    def first_scan_done(self) -> bool:
        """True once a record written from now on is certain to be read (readiness waits for it)."""
        ...

    async def run(self, queue: asyncio.Queue[Batch]) -> None:
        """Put batches on ``queue`` until cancelled (``put`` on a bounded queue is the backpressure)."""
        ...

    async def close(self, queue: asyncio.Queue[Batch] | None = None) -> None:
        """After ``run`` was cancelled: hand on what may be handed on (``queue``), free every resource."""
        ...

    def status(self) -> dict[str, Any]:
        """The health view of this source (``files``: a list, possibly empty)."""
        ...
