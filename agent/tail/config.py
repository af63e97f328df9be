"""`logs:` entries as the file source sees them (the app's config subclasses ``TailConfig`` to add rules)."""

from __future__ import annotations

import codecs
import re
from typing import Annotated, Literal

from agent.model import FieldError, Meta, Model, field
from agent.units import ByteSize, Duration


class MultilineConfig(Model):
    """Join continuation lines (e.g. Java stack traces) to the line that starts a record."""

    start: str
    """Regex (Python ``re``, searched) that marks the first line of a record; anchor it with ``^``."""
    timeout: Duration = 2.0
    """A pending record is emitted when no line was added to it for this long."""
    max_lines: Annotated[int, Meta(ge=1)] = 500
    """A record is emitted as soon as it has this many lines (bounds memory)."""

    def __post_init__(self) -> None:
        try:
            re.compile(self.start)
        except re.error as exc:
            raise FieldError("start", f"invalid regex {self.start!r}: {exc}") from None


class TailConfig(Model):
    """One file source."""

    name: Annotated[str, Meta(min_length=1)]
    paths: Annotated[list[str], Meta(min_length=1)]
    exclude_paths: list[str] = field(default_factory=list)
    rotated_paths: list[str] = field(default_factory=list)
    """Globs where rotated files go when not beside the file (logrotate ``olddir``): searched, by identity,
    for a stream that was rotated away while the agent did not look (stopped, or the file was closed)."""
    start_at: Literal["end", "beginning"] = "end"
    encoding: str = "utf-8"
    max_line_bytes: ByteSize = 64 * 1024  # >= 256, checked in __post_init__ (msgspec's Meta is for plain types)
    multiline: MultilineConfig | None = None
    max_open_files: Annotated[int, Meta(ge=1)] = 1024
    read_chunk_bytes: ByteSize = 1024 * 1024  # >= 4096
    fingerprint_bytes: Annotated[int, Meta(ge=16, le=65536)] = 256
    poll_interval: Duration = 1.0  # > 0
    rescan_interval: Duration = 10.0  # > 0
    rotate_wait: Duration = 5.0
    inotify: bool = True

    def __post_init__(self) -> None:
        # In field order, so the first problem reported is the first key's. A subclass that
        # has its own __post_init__ must call this one.
        for name in ("paths", "exclude_paths", "rotated_paths"):
            if any(not p.strip() for p in getattr(self, name)):
                raise FieldError(name, "empty path pattern")
        self.encoding = _known_encoding(self.encoding)
        for name, least in (("max_line_bytes", 256), ("read_chunk_bytes", 4096)):
            if getattr(self, name) < least:
                raise FieldError(name, f"must be greater than or equal to {least}")
        self.require_positive("poll_interval", "rescan_interval")

    def framing(self) -> Literal["cri", "docker"] | None:
        """How a container runtime frames the lines of these files, when it does: ``cri`` (containerd, CRI-O:
        ``<time> <stream> <P|F> <message>``) or ``docker`` (json-file: ``{"log": ..., "stream", "time"}``).
        The tailer then joins the records the runtime split over several lines (``agent/tail/partials.py``).

        A method, not a field: the tailer knows no ``format:`` key. The source config that has one (the app's
        ``LogSourceConfig``) overrides this and answers from the start of its format chain; None here.
        """
        return None


def _known_encoding(value: str) -> str:
    """The codec's canonical name (``GBK`` -> ``gbk``); a config error on ``encoding`` unless it is a text
    encoding in which a newline is the byte 0x0A (the tailer splits lines on bytes)."""
    try:
        info = codecs.lookup(value)
    except LookupError:
        raise FieldError("encoding", f"unknown encoding {value!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise FieldError("encoding", f"{value!r} is not a text encoding")
    try:
        ok = "\n".encode(info.name) == b"\n" and b"a\nb".decode(info.name) == "a\nb"
    except (UnicodeError, LookupError):
        ok = False
    if not ok:
        raise FieldError("encoding", f"encoding {value!r} is not ASCII-compatible (newline must be the byte 0x0A)")
    return info.name
