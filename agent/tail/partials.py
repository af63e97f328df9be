"""Container log framing: the records a container runtime split over several lines, joined again.

Kubernetes nodes write a container's stdout and stderr into one file, one framed line per record, and split a
record longer than the runtime's buffer (16 KiB) over several lines:

* CRI (containerd, CRI-O): ``<RFC3339Nano time> <stdout|stderr> <tag> <message>``; the first character of the
  tag says ``P`` (partial: the message goes on in the next line of that stream) or ``F`` (full, or final
  part). Flags after a colon (``F:x``) are ignored.
* Docker json-file: ``{"log":"text\\n","stream":"stdout","time":"..."}``; a ``log`` that does not end with a
  newline goes on in the next line's ``log``.

The parts are concatenated with no separator and the record is handed on as ONE line in the same framing (CRI:
``<time> <stream> F <message>``; Docker: ``{"log", "stream", "time"}`` re-serialized), with its first part's
time and stream, so the format stage downstream sees an ordinary full line. Lines that are not valid framing
pass through unchanged (downstream counts them as parse errors); a line that needs no joining is never
rebuilt, and a chunk that certainly holds no partial goes on undecoded (:meth:`Framing.whole`).

Where the pending parts live, and what that means for checkpoints: on the stream (``Stream.partial``), like
a multiline record. The stream's checkpoints stay at the first part's line until the record is handed on, so
a crash or a restart between a ``P`` line and its ``F`` re-reads the whole record and emits it once, joined.

How a pending record ends other than with its final part, each time handed on as what was joined so far:

* a line that is not valid framing, or a line of the other stream (stdout/stderr): the pending record is
  handed on first, so the file's order is kept. One checkpoint per file cannot hold one stream's finished
  records back behind the other's pending one, so the record's remaining parts become a record of their own;
* the stream finishing for good (rotated away and drained, deleted, truncated, lost): its pending record goes
  out with the stream's last batch, nothing is lost; the parts the runtime writes into the next file become
  a record of their own there;
* never at shutdown: the final part is still to be written, and the restart rebuilds the record from its
  first part (the checkpoint is there). Nor after a time: the runtime writes the parts of a record at once.

Memory is bounded by ``max_line_bytes``: a record growing past it is handed on cut to that size (counted in
``lines_truncated``) and the rest of its parts are skipped up to its final part (``bytes_skipped``). A
restart while skipping cannot know (the checkpoint has no room to say so): the rest after the restart
position comes out as a record of its own.

A ``start_at: end`` first start in the middle of a record sees its remaining parts as a record of their own.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Protocol

import orjson
import structlog

from agent.source import SourceStats
from agent.tail.stream import Partial, Stream

log = structlog.get_logger(__name__)

FramingName = Literal["cri", "docker"]


class Part(NamedTuple):
    """One framed line, parsed."""

    time: str
    stream: str
    partial: bool
    """The record goes on in the next line of this stream."""
    message: str


def nbytes(text: str) -> int:
    """UTF-8 length of ``text`` (``isascii`` is O(1) in CPython: the common case costs nothing)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def cut(text: str, limit: int) -> str:
    """The first ``limit`` UTF-8 bytes of ``text``, never splitting a character."""
    if text.isascii():
        return text[:limit]
    return text.encode("utf-8", "surrogatepass")[:limit].decode("utf-8", "ignore")


class Framing(Protocol):
    name: FramingName

    def parse(self, line: str) -> Part | None:
        """The line's parts, or None when it is not valid framing."""

    def line(self, time: str, stream: str, message: str) -> str:
        """A full framed line holding ``message`` (a joined record)."""

    def message(self, line: str) -> str | None:
        """The message of a full framed line (what a multiline ``start`` is searched in), None if not framed."""

    def continued(self, lines: list[str]) -> str:
        """A multiline record: its first line (whole) and the messages of its continuations, as one record."""

    def whole(self, chunk: bytes, count: int) -> bool:
        """Certainly no partial among these ``count`` complete lines (undecoded): the chunk needs no joining."""


class CriFraming:
    """``<time> <stdout|stderr> <P|F>[:flags] <message>``, single spaces (what containerd and CRI-O write)."""

    name: FramingName = "cri"

    def parse(self, line: str) -> Part | None:
        a = line.find(" ")
        if a <= 0 or not line[0].isdigit():
            return None
        b = line.find(" ", a + 1)
        if b < 0:
            return None
        stream = line[a + 1 : b]
        if stream != "stdout" and stream != "stderr":
            return None
        tag = line[b + 1 : b + 2]
        if tag != "P" and tag != "F":
            return None
        c = line.find(" ", b + 1)
        return Part(line[:a], stream, tag == "P", line[c + 1 :] if c >= 0 else "")

    def line(self, time: str, stream: str, message: str) -> str:
        return f"{time} {stream} F {message}"

    def message(self, line: str) -> str | None:
        part = self.parse(line)
        return part.message if part is not None else None

    def continued(self, lines: list[str]) -> str:
        # a CRI record whose message holds newlines: downstream parses the first line's prefix, and the message
        # runs to the end of the record
        return "\n".join(lines)

    def whole(self, chunk: bytes, count: int) -> bool:
        # The tag is the third field and a P line's starts with "P" right after the stream's name. A message
        # that happens to say "stdout P" only sends its chunk down the slow path.
        return b"stdout P" not in chunk and b"stderr P" not in chunk


_LOG_END = b'\\n","stream"'
"""How a ``log`` ending with a newline meets the next key: docker writes the keys in the order log, stream,
time, compact, so the first unescaped ``","stream"`` of a line ends its ``log``."""
_ESCAPED_BACKSLASH_N = b'\\\\n","stream"'
"""A ``log`` ending with an escaped backslash and a plain ``n`` (or a backslash and a newline): unsure."""


class DockerFraming:
    """Docker's json-file driver: one JSON object per line, ``{"log": ..., "stream": ..., "time": ...}``."""

    name: FramingName = "docker"

    def _object(self, line: str) -> dict[str, object] | None:
        if not line.startswith("{"):
            return None
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("log"), str):
            return None
        if not isinstance(obj.get("stream"), str) or not isinstance(obj.get("time", ""), str):
            return None
        return obj

    def parse(self, line: str) -> Part | None:
        obj = self._object(line)
        if obj is None:
            return None
        text = obj["log"]
        assert isinstance(text, str)
        return Part(str(obj.get("time", "")), str(obj["stream"]), not text.endswith("\n"), text)

    def line(self, time: str, stream: str, message: str) -> str:
        return _dumps({"log": message, "stream": stream, "time": time})

    def message(self, line: str) -> str | None:
        part = self.parse(line)
        if part is None:
            return None
        return part.message[:-1] if part.message.endswith("\n") else part.message

    def continued(self, lines: list[str]) -> str:
        if len(lines) == 1:
            return lines[0]
        obj = self._object(lines[0])
        if obj is None:
            return "\n".join(lines)
        first = obj["log"]
        assert isinstance(first, str)
        # each message was a newline-terminated line of the application: so is the record
        obj["log"] = "\n".join([first[:-1] if first.endswith("\n") else first, *lines[1:]]) + "\n"
        return _dumps(obj)

    def whole(self, chunk: bytes, count: int) -> bool:
        # Every line's log ends with a newline iff each line's one ``","stream"`` follows an escaped newline.
        # A partial line has a ``","stream"`` without it, so the two counts differ; a ``log`` ending with an
        # escaped backslash and "n" would look like a newline: such a chunk takes the slow path.
        return (chunk.count(b'","stream"') == count and chunk.count(_LOG_END) == count
                and _ESCAPED_BACKSLASH_N not in chunk)


def _dumps(obj: dict[str, object]) -> str:
    try:
        return orjson.dumps(obj).decode("utf-8")
    except TypeError:  # a lone surrogate (never from a decoded file; cheap to be sure)
        return orjson.dumps({k: v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v
                             for k, v in obj.items()}).decode("utf-8")


def framing_for(name: FramingName) -> Framing:
    if name == "cri":
        return CriFraming()
    if name == "docker":
        return DockerFraming()
    raise ValueError(f"unknown framing {name!r}")


class PartialJoiner:
    """Joins the partial records of framed streams; its only state is on the streams (and the counters)."""

    def __init__(self, framing: Framing, *, max_line_bytes: int, stats: SourceStats, source: str) -> None:
        self.framing = framing
        self.max_bytes = max_line_bytes
        self.stats = stats
        self.source = source

    def whole(self, stream: Stream, chunk: bytes, count: int) -> bool:
        """The reader's fast path: these complete lines go on as they are (nothing pending, no partial)."""
        return stream.partial is None and stream.partial_skip is None and self.framing.whole(chunk, count)

    def join(self, stream: Stream, texts: list[str], starts: list[int]) -> tuple[list[str], list[int]]:
        """Complete records (and where each begins) from the decoded lines of one read (``starts``: each
        line's position); the parts of a record not complete yet stay on ``stream``. The same two lists come
        back when no line needed joining."""
        parse = self.framing.parse
        records: list[str] = []
        positions: list[int] = []
        changed = False
        for text, position in zip(texts, starts, strict=True):
            part = parse(text)
            if part is None:
                if stream.partial is not None:
                    self._hand_on(stream, records, positions)
                    changed = True
                stream.partial_skip = None
                records.append(text)
                positions.append(position)
                continue
            if stream.partial_skip is not None:
                if stream.partial_skip == part.stream:
                    self.stats.bytes_skipped += nbytes(part.message)
                    if not part.partial:
                        stream.partial_skip = None
                    changed = True
                    continue
                stream.partial_skip = None  # the other stream's line: that record ends here
            pending = stream.partial
            if pending is not None and pending.stream != part.stream:
                self._hand_on(stream, records, positions)
                pending = None
                changed = True
            if pending is None:
                if not part.partial:
                    records.append(text)  # a whole record in one line: on as it is
                    positions.append(position)
                    continue
                pending = stream.partial = Partial(position, part.time, part.stream, [part.message],
                                                   nbytes(part.message))
            else:
                pending.parts.append(part.message)
                pending.size += nbytes(part.message)
            changed = True
            if pending.size > self.max_bytes:
                self._hand_on(stream, records, positions)
                if part.partial:
                    stream.partial_skip = part.stream
            elif not part.partial:
                self._hand_on(stream, records, positions)
        if not changed:
            return texts, starts
        return records, positions

    def take(self, stream: Stream) -> tuple[list[str], list[int]]:
        """A stream finished for good: its pending record as joined so far (or nothing), off the stream."""
        stream.partial_skip = None
        if stream.partial is None:
            return [], []
        records: list[str] = []
        positions: list[int] = []
        self._hand_on(stream, records, positions)
        return records, positions

    def _hand_on(self, stream: Stream, records: list[str], positions: list[int]) -> None:
        """The pending record, joined (cut to ``max_line_bytes`` when longer), onto ``records``."""
        pending = stream.partial
        assert pending is not None
        stream.partial = None
        message = "".join(pending.parts)
        if pending.size > self.max_bytes:
            kept = cut(message, self.max_bytes)
            self.stats.lines_truncated += 1
            self.stats.bytes_skipped += pending.size - nbytes(kept)
            if not stream.warned_long:
                stream.warned_long = True
                log.warning("tail.partial_record_truncated", source=self.source, path=stream.path,
                            max_line_bytes=self.max_bytes, framing=self.framing.name)
            message = kept
        records.append(self.framing.line(pending.time, pending.stream, message))
        positions.append(pending.start)
