"""`outbox:` — how much may wait on disk, for how long, and what happens when it is full."""

from __future__ import annotations

from typing import Literal

from agent.model import Model
from agent.units import ByteSize, Duration


class OutboxConfig(Model):
    """`outbox:` — how much may wait on disk, for how long, and what happens when it is full."""

    max_bytes: ByteSize = 256 * 1024 * 1024
    max_age: Duration = 24 * 3600.0
    on_full: Literal["drop_oldest", "block_sources"] = "drop_oldest"
    fsync: Literal["normal", "always"] = "normal"
    flush_interval: Duration = 0.0  # extra wait for more batches to share a transaction (0: group what is queued)
