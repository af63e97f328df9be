"""Multiline records: continuation lines (a Java stack trace) joined to the line that starts the record.

The pending record lives on its stream (``Stream.record``), so the stream's checkpoint stays at the record's
first line until the record is complete: a restart re-reads the whole record instead of emitting its tail.
A record ends at the next start line, at ``max_lines``, after ``timeout`` without a new line, or with its
stream (rotation, shutdown).
"""

from __future__ import annotations

import re

from agent.tail.config import MultilineConfig
from agent.tail.stream import Stream


class RecordAssembler:
    def __init__(self, config: MultilineConfig) -> None:
        self.config = config
        self._start = re.compile(config.start)

    def assemble(self, stream: Stream, texts: list[str], starts: list[int], now: float) -> list[str]:
        """Group lines (``starts``: the file position of each) into complete records, keeping the pending one."""
        start_rx = self._start
        max_lines = self.config.max_lines
        records: list[str] = []
        for text, position in zip(texts, starts, strict=True):
            if stream.record and start_rx.search(text):
                records.append("\n".join(stream.record))
                stream.record = []
            if not stream.record:
                stream.record_start = position
            stream.record.append(text)
            if len(stream.record) >= max_lines:
                records.append("\n".join(stream.record))
                stream.record = []
        if texts:
            stream.record_updated = now
        return records

    def timed_out(self, stream: Stream, now: float) -> bool:
        return bool(stream.record) and now - stream.record_updated >= self.config.timeout

    def deadline(self, stream: Stream) -> float:
        """When the pending record of ``stream`` times out."""
        return stream.record_updated + self.config.timeout


def take_record(stream: Stream) -> list[str]:
    """The pending record as one line (or nothing), removed from the stream."""
    if not stream.record:
        return []
    record = "\n".join(stream.record)
    stream.record = []
    return [record]
