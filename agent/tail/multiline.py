"""Multiline records: continuation lines (a Java stack trace) joined to the line that starts the record.

The pending record lives on its stream (``Stream.record``), so the stream's checkpoint stays at the record's
first line until the record is complete: a restart re-reads the whole record instead of emitting its tail.
A record ends at the next start line, at ``max_lines``, after ``timeout`` without a new line, or with its
stream (rotation, shutdown).

In container logs (``agent/tail/partials.py``) every line carries a framing (CRI's time, stream and tag, or
Docker's JSON): the ``start`` regex is searched in each line's message, and a continuation adds only its
message, so the record is its first line whole plus the messages after it (``Framing.continued``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.tail.config import MultilineConfig
from agent.tail.stream import Stream


class RecordAssembler:
    """``message_of`` (a framed line's message, None when it is not framed) and ``continued`` (the record from
    its first line and the continuations' messages) come together, for framed sources only."""

    def __init__(self, config: MultilineConfig, *, message_of: Callable[[str], str | None] | None = None,
                 continued: Callable[[list[str]], str] | None = None) -> None:
        self.config = config
        self._start = re.compile(config.start)
        self._message_of = message_of
        self._join: Callable[[list[str]], str] = continued if continued is not None else "\n".join

    def assemble(self, stream: Stream, texts: list[str], starts: list[int], now: float) -> list[str]:
        """Group lines (``starts``: the file position of each) into complete records, keeping the pending one."""
        if self._message_of is not None:
            return self._assemble_framed(stream, texts, starts, now, self._message_of)
        start_rx = self._start
        max_lines = self.config.max_lines
        records: list[str] = []
        for text, position in zip(texts, starts, strict=True):
            if stream.record and start_rx.search(text):
                records.append("\n".join(stream.record))
                stream.record = []
            if not stream.record:
                stream.record_start = position
                stream.record = []  # a stream holds no list until a record starts
            stream.record.append(text)
            if len(stream.record) >= max_lines:
                records.append("\n".join(stream.record))
                stream.record = []
        if texts:
            stream.record_updated = now
        return records

    def _assemble_framed(self, stream: Stream, texts: list[str], starts: list[int], now: float,
                         message_of: Callable[[str], str | None]) -> list[str]:
        start_rx = self._start
        max_lines = self.config.max_lines
        join = self._join
        records: list[str] = []
        for text, position in zip(texts, starts, strict=True):
            message = message_of(text)
            if message is None:
                message = text  # not framed: the line is its own message
            if stream.record and start_rx.search(message):
                records.append(join(stream.record))
                stream.record = []
            if not stream.record:
                stream.record_start = position
                stream.record = [text]  # a stream holds no list until a record starts
            else:
                stream.record.append(message)
            if len(stream.record) >= max_lines:
                records.append(join(stream.record))
                stream.record = []
        if texts:
            stream.record_updated = now
        return records

    def take(self, stream: Stream) -> list[str]:
        """The pending record as one record (or nothing), removed from the stream."""
        return take_record(stream, self._join)

    def timed_out(self, stream: Stream, now: float) -> bool:
        return bool(stream.record) and now - stream.record_updated >= self.config.timeout

    def deadline(self, stream: Stream) -> float:
        """When the pending record of ``stream`` times out."""
        return stream.record_updated + self.config.timeout


def take_record(stream: Stream, join: Callable[[list[str]], str] = "\n".join) -> list[str]:
    """The pending record as one line (or nothing), removed from the stream."""
    if not stream.record:
        return []
    record = join(stream.record)
    stream.record = []
    return [record]
