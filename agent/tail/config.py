"""`logs:` entries as the file source sees them (the app's config subclasses ``TailConfig`` to add rules)."""

from __future__ import annotations

import codecs
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent.units import ByteSize, Duration


class MultilineConfig(BaseModel):
    """Join continuation lines (e.g. Java stack traces) to the line that starts a record."""

    model_config = ConfigDict(extra="forbid")

    start: str
    """Regex (Python ``re``, searched) that marks the first line of a record; anchor it with ``^``."""
    timeout: Duration = 2.0
    """A pending record is emitted when no line was added to it for this long."""
    max_lines: int = Field(500, ge=1)
    """A record is emitted as soon as it has this many lines (bounds memory)."""

    @field_validator("start")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex {value!r}: {exc}") from None
        return value


class TailConfig(BaseModel):
    """One file source."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    paths: list[str] = Field(min_length=1)
    exclude_paths: list[str] = []
    rotated_paths: list[str] = []
    """Globs where rotated files go when not beside the file (logrotate ``olddir``): searched, by identity,
    for a stream that was rotated away while the agent did not look (stopped, or the file was closed)."""
    start_at: Literal["end", "beginning"] = "end"
    encoding: str = "utf-8"
    max_line_bytes: ByteSize = Field(64 * 1024, ge=256)
    multiline: MultilineConfig | None = None
    max_open_files: int = Field(1024, ge=1)
    read_chunk_bytes: ByteSize = Field(1024 * 1024, ge=4096)
    fingerprint_bytes: int = Field(256, ge=16, le=65536)
    poll_interval: Duration = Field(1.0, gt=0)
    rescan_interval: Duration = Field(10.0, gt=0)
    rotate_wait: Duration = 5.0
    inotify: bool = True

    def framing(self) -> Literal["cri", "docker"] | None:
        """How a container runtime frames the lines of these files, when it does: ``cri`` (containerd, CRI-O:
        ``<time> <stream> <P|F> <message>``) or ``docker`` (json-file: ``{"log": ..., "stream", "time"}``).
        The tailer then joins the records the runtime split over several lines (``agent/tail/partials.py``).

        A method, not a field: the tailer knows no ``format:`` key. The source config that has one (the app's
        ``LogSourceConfig``) overrides this and answers from the start of its format chain; None here.
        """
        return None

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{value!r} is not a text encoding")
        try:
            ok = "\n".encode(info.name) == b"\n" and b"a\nb".decode(info.name) == "a\nb"
        except (UnicodeError, LookupError):
            ok = False
        if not ok:
            raise ValueError(f"encoding {value!r} is not ASCII-compatible (newline must be the byte 0x0A)")
        return info.name

    @field_validator("paths", "exclude_paths", "rotated_paths")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if any(not p.strip() for p in value):
            raise ValueError("empty path pattern")
        return value
