"""The file source's counters (the agent exports the common ones per source to Prometheus)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.source import SourceStats


@dataclass(slots=True)
class TailStats(SourceStats):
    """Monotonic counters of one file source, written by its worker thread only."""

    batches: int = 0
    files_opened: int = 0
    files_closed: int = 0
    rotations: int = 0
    truncations: int = 0
    errors: int = 0
    compressed_reads: int = 0
    """Rotated streams whose unread tail was read from their compressed rotation."""
    overflow_rescans: int = 0
    """Full rescans because the inotify queue overflowed (the overflow itself is counted once per agent)."""
