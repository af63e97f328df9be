"""Reading a stream: one chunk of bytes into complete lines, over-long lines cut, invalid bytes replaced.

The hottest path of the agent. The common case (valid UTF-8, no multiline, no line over ``max_line_bytes``)
hands the complete lines on undecoded as a :class:`agent.lines.LineChunk`; everything else is decoded here.
Container logs (a source with a ``framing``) keep that fast path for chunks that certainly hold no part of a
split record; the others are decoded and their records joined (``agent/tail/partials.py``), before multiline.
A partial last line is held back (never handed out, never checkpointed past) and re-read with the next chunk.
A line longer than ``max_line_bytes`` is cut at a character boundary and the rest of it skipped, counted.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Sequence
from typing import NamedTuple

import structlog

from agent.fileid import pread_exact
from agent.lines import LineChunk, count_newlines
from agent.tail.config import TailConfig
from agent.tail.multiline import RecordAssembler
from agent.tail.partials import PartialJoiner, framing_for
from agent.tail.stats import TailStats
from agent.tail.stream import GUARD_BYTES, Stream, guard_before

log = structlog.get_logger(__name__)


class Read(NamedTuple):
    lines: Sequence[str]
    data: bytes | None
    """The lines as UTF-8 joined by newlines, when they are exactly that (the matcher then skips encoding)."""
    new_bytes: int


def decode_counting(raw: bytes, encoding: str, *, final: bool = True) -> tuple[str, int]:
    """Decode like ``errors="replace"`` and say how many bytes were replaced (the drop must show in metrics).

    ``final=False`` drops an incomplete character at the end (a line cut at ``max_line_bytes``).
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    parts: list[str] = []
    replaced = pos = 0
    while True:
        try:
            parts.append(decoder.decode(raw[pos:], final=final))
            return "".join(parts), replaced
        except UnicodeDecodeError as exc:
            parts.append(raw[pos : pos + exc.start].decode(encoding))
            parts.append("\ufffd")
            replaced += exc.end - exc.start
            pos += exc.end
            decoder.reset()


VALIDATE_SLICE = 64 * 1024


def valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8, decoded in 64 KiB slices and thrown away (the matcher decodes the few
    lines it needs). Decoding a 1 MiB chunk at once made a 1-4 MiB string per chunk: above glibc's mmap
    threshold at first, then (the threshold adapts) from a heap that grew to ~300 MiB on a log with UTF-8 text
    and was never given back."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(data), VALIDATE_SLICE):
            decoder.decode(view[start:start + VALIDATE_SLICE])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


class LineReader:
    """Turns the bytes of one stream into lines; stateless but for the stream it is given and the counters."""

    def __init__(self, config: TailConfig, stats: TailStats) -> None:
        self.config = config
        self.stats = stats
        self._encoding = config.encoding
        self._utf8 = codecs.lookup(config.encoding).name == "utf-8"
        framing = config.framing()
        self.joiner = None if framing is None else PartialJoiner(
            framing_for(framing), max_line_bytes=config.max_line_bytes, stats=stats, source=config.name)
        self.assembler: RecordAssembler | None = None
        if config.multiline is not None:
            if self.joiner is None:
                self.assembler = RecordAssembler(config.multiline)
            else:
                self.assembler = RecordAssembler(config.multiline, message_of=self.joiner.framing.message,
                                                 continued=self.joiner.framing.continued)
        self._positions = self.assembler is not None or self.joiner is not None
        """Both keep a record pending on its stream and need each line's file position."""

    def read(self, f: Stream, size: int, now: float) -> Read:
        """Read one chunk of ``f`` (an open stream) up to ``size``; advance its positions."""
        assert f.fd is not None
        # Read from the start of the held-back partial line (re-reading it, at most max_line_bytes) rather
        # than concatenating it to the new bytes: one buffer, no extra copy of a 1 MiB chunk.
        start = f.read_end if f.skipping_long_line else f.consumed
        held = f.read_end - start
        buf = os.pread(f.fd, min(self.config.read_chunk_bytes + held, size - start), start)
        n = len(buf) - held
        if n <= 0:
            return Read([], None, 0)
        f.read_end = start + len(buf)
        f.last_activity = now
        self.stats.bytes_read += n
        data = buf
        if f.skipping_long_line:
            nl = buf.find(b"\n")
            if nl < 0:
                self.stats.bytes_skipped += n
                f.consumed = f.read_end
                f.guard = buf[-GUARD_BYTES:] if n >= GUARD_BYTES else guard_before(f, f.consumed)
                return Read([], None, n)
            self.stats.bytes_skipped += nl
            f.skipping_long_line = False
            data = buf[nl + 1 :]
            start += nl + 1
            f.consumed = start
        return self._lines(f, data, start, n, now)

    def _lines(self, f: Stream, data: bytes, start: int, n: int, now: float) -> Read:
        max_line = self.config.max_line_bytes
        last_nl = data.rfind(b"\n")
        complete = data[:last_nl] if last_nl >= 0 else b""
        rest = data[last_nl + 1 :] if last_nl >= 0 else data
        texts: list[str] = []
        chunk: LineChunk | None = None
        starts: list[int] = []
        fast = True
        if last_nl >= 0:
            maybe_long = len(complete) > max_line and self._may_have_long_line(complete)
            chunk = None if maybe_long else self._chunk(f, complete)
            if chunk is None:
                texts, starts, fast = self._split(f, complete, start, maybe_long)
            f.consumed = start + last_nl + 1
        if len(rest) > max_line:
            line_start = start + (last_nl + 1 if last_nl >= 0 else 0)
            if chunk is not None:
                texts, chunk = list(chunk), None
                if self._positions:
                    starts = self._line_starts(complete.split(b"\n"), start)
            texts.append(self.cut_long_line(f, rest))
            starts.append(line_start)
            self.stats.bytes_skipped += len(rest) - max_line
            f.skipping_long_line = True
            f.consumed = f.read_end
            fast = False
        if f.consumed > 0:
            if last_nl >= GUARD_BYTES and not f.skipping_long_line:
                f.guard = data[last_nl + 1 - GUARD_BYTES : last_nl + 1]
            else:
                f.guard = guard_before(f, f.consumed)
        if chunk is not None:
            self.stats.lines_read += len(chunk)
            return Read(chunk, None, n)
        self.stats.lines_read += len(texts)
        records = self.records(f, texts, starts, now)
        if self.assembler is not None:
            return Read(records, None, n)
        if not records:
            return Read([], None, n)
        if fast and self._utf8 and records is texts:
            return Read(texts, complete, n)
        return Read(records, "\n".join(records).encode("utf-8", "surrogatepass"), n)

    def records(self, f: Stream, texts: list[str], starts: list[int], now: float) -> list[str]:
        """Decoded lines to records: split container records joined, then multiline records assembled (each
        keeps what is not complete yet on the stream). ``texts`` itself when neither applies."""
        if self.joiner is not None:
            texts, starts = self.joiner.join(f, texts, starts)
        if self.assembler is not None:
            return self.assembler.assemble(f, texts, starts, now)
        return texts

    def rest(self, f: Stream, now: float) -> list[str]:
        """A stream finished for good: what is pending on it as records (the split container record joined
        so far, through the multiline assembler, then the pending multiline record)."""
        records: list[str] = []
        if self.joiner is not None:
            texts, starts = self.joiner.take(f)
            records = self.assembler.assemble(f, texts, starts, now) if self.assembler is not None else texts
        if self.assembler is not None:
            records.extend(self.assembler.take(f))
        return records

    def _chunk(self, f: Stream, complete: bytes) -> LineChunk | None:
        """Complete lines (none over-long: the caller checked) handed on undecoded (see agent/lines.py): the
        common case of valid UTF-8 without multiline records (nor, in container logs, a part of a split record
        in the chunk or pending on the stream). None sends the chunk down the per-line path."""
        if self.assembler is not None or not self._utf8:
            return None
        count = count_newlines(complete) + 1
        if self.joiner is not None and not self.joiner.whole(f, complete, count):
            return None
        ascii = complete.isascii()
        if not ascii and not valid_utf8(complete):
            return None
        return LineChunk(complete, count, ascii=ascii)

    def _split(self, f: Stream, complete: bytes, start: int, maybe_long: bool) -> tuple[list[str], list[int], bool]:
        """Decode complete lines; the fast path is one decode and one split per chunk (no per-line work).
        ``maybe_long``: :meth:`_may_have_long_line` of the chunk, from the caller."""
        max_line = self.config.max_line_bytes
        try:
            text = complete.decode(self._encoding)
        except UnicodeDecodeError:
            return self._split_slow(f, complete.split(b"\n"), start)
        texts = text.split("\n")
        parts: list[bytes] | None = None
        if maybe_long:
            parts = complete.split(b"\n")
            if max(map(len, parts)) > max_line:
                return self._split_slow(f, parts, start)
        starts: list[int] = []
        if self._positions:
            starts = self._line_starts(parts if parts is not None else complete.split(b"\n"), start)
        return texts, starts, True

    @staticmethod
    def _line_starts(parts: list[bytes], start: int) -> list[int]:
        """The file position of each line (``parts``: the raw lines, read from ``start``)."""
        starts: list[int] = []
        pos = start
        for p in parts:
            starts.append(pos)
            pos += len(p) + 1
        return starts

    def _may_have_long_line(self, complete: bytes) -> bool:
        """Cheap test for a line longer than max_line_bytes: ~2 C-level find() calls per max_line_bytes.

        Any line longer than M bytes fully contains one of the aligned windows of M // 2 bytes, so if every
        window holds a newline, no line is too long (exact check only when a window has none).
        """
        half = max(1, self.config.max_line_bytes // 2)
        find = complete.find
        for pos in range(0, len(complete) - half + 1, half):
            if find(b"\n", pos, pos + half) < 0:
                return True
        return False

    def _split_slow(self, f: Stream, parts: list[bytes], start: int) -> tuple[list[str], list[int], bool]:
        max_line = self.config.max_line_bytes
        texts: list[str] = []
        starts: list[int] = []
        pos = start
        for p in parts:
            starts.append(pos)
            pos += len(p) + 1
            if len(p) > max_line:
                self.stats.bytes_skipped += len(p) - max_line
                texts.append(self.cut_long_line(f, p))
            else:
                texts.append(self.decode(f, p))
        return texts, starts, False

    def decode(self, f: Stream, raw: bytes) -> str:
        """One line's text; invalid bytes replaced and counted."""
        try:
            return raw.decode(self._encoding)
        except UnicodeDecodeError:
            text, replaced = decode_counting(raw, self._encoding)
            self._count_replaced(f, replaced)
            return text

    def cut_long_line(self, f: Stream, raw: bytes) -> str:
        """Keep the first ``max_line_bytes`` bytes of an over-long line, never splitting a character."""
        self.stats.lines_truncated += 1
        if not f.warned_long:
            f.warned_long = True
            log.warning("tail.line_truncated", source=self.config.name, path=f.path,
                        max_line_bytes=self.config.max_line_bytes)
        text, replaced = decode_counting(raw[: self.config.max_line_bytes], self._encoding, final=False)
        if replaced:
            self._count_replaced(f, replaced)
        return text

    def last_line(self, f: Stream) -> str | None:
        """The unterminated last line of a stream that is finished for good (read, decoded, consumed)."""
        if f.read_end <= f.consumed or f.skipping_long_line or f.fd is None:
            return None
        raw = pread_exact(f.fd, f.read_end - f.consumed, f.consumed)
        text = self.cut_long_line(f, raw) if len(raw) > self.config.max_line_bytes else self.decode(f, raw)
        self.stats.lines_read += 1
        f.consumed = f.read_end
        return text

    def _count_replaced(self, f: Stream, count: int) -> None:
        self.stats.bytes_replaced += count
        if not f.warned_encoding:
            f.warned_encoding = True
            log.warning("tail.invalid_encoding", source=self.config.name, path=f.path, encoding=self._encoding)
