"""Handing lines out: each batch with the checkpoint right after its lines, in stream order.

A checkpoint never goes past a line not handed out: while a multiline record is pending it stays at the
record's first line, while a container record split by its runtime is pending (``agent/tail/partials.py``) at
its first part's line (the smaller of the two when both are), and a held-back partial line is never covered.
A bare checkpoint (no lines) goes out only when the position moved (a skipped long line, ``start_at: end``),
and ``finished`` tells the agent to forget a stream's checkpoint for good.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.source import Batch, Checkpoint
from agent.tail import checkpoint
from agent.tail.stats import TailStats
from agent.tail.stream import Stream, guard_before


@dataclass(slots=True)
class Emission:
    stream: Stream | None  # None: a checkpoint that matches no stream (forgotten)
    batch: Batch


class Emitter:
    """Collects one cycle's batches (the worker thread's output; the event loop puts them on the queue)."""

    def __init__(self, source: str, keys: checkpoint.StreamKeys, stats: TailStats) -> None:
        self.source = source
        self.keys = keys
        self.stats = stats
        self.out: list[Emission] = []

    def take(self) -> list[Emission]:
        out, self.out = self.out, []
        return out

    def emit(self, f: Stream, lines: Sequence[str], data: bytes | None, *, finished: bool = False) -> None:
        if f.record:
            position, skipping = f.record_start, False
        else:
            position, skipping = f.consumed, f.skipping_long_line
        if f.partial is not None and f.partial.start < position:
            position, skipping = f.partial.start, False
        if not lines and not finished and position == f.checkpoint_pos and skipping == f.checkpoint_skipping:
            return
        if finished and f.key is None and not lines:
            return  # nothing was ever handed out for this stream: nothing to forget
        guard = f.guard if position == f.consumed else guard_before(f, position)
        key = self.keys.ensure(f)
        batch = Batch(
            source=self.source,
            path=f.path,
            lines=lines,
            checkpoint=Checkpoint(key, checkpoint.encode(f, position, skipping, guard)),
            finished=finished,
            data=data if lines and data is not None else None,
        )
        f.checkpoint_pos, f.checkpoint_skipping = position, skipping
        self.stats.batches += 1
        self.out.append(Emission(f, batch))

    def forget(self, key: str, state: str) -> None:
        """A stored checkpoint that no stream will ever continue: the agent deletes it."""
        path = checkpoint.stored_path(state)
        self.stats.batches += 1
        self.out.append(Emission(None, Batch(self.source, path, [], Checkpoint(key, state), finished=True)))
