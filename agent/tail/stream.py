"""One stream: the content of one file identity, read in order, and every position the tailer keeps for it.

A stream is not a path. Its identity is the file's device and inode plus a fingerprint of its first bytes,
and it is read through an open descriptor, so a file renamed away by rotation is finished through that
descriptor, never by name. The positions, in the order they advance:

* ``checkpoint_pos`` - what the last emitted checkpoint says (a restart resumes here);
* ``record_start`` - where a pending multiline record begins (checkpoints stop here while it is pending);
* ``partial.start`` - where a container record split by its runtime begins (CRI ``P`` lines, Docker ``log``
  without a newline: see ``agent/tail/partials.py``); checkpoints stop here too while it is pending;
* ``consumed`` - after the last complete line handed on (or after the skipped part of an over-long line);
* ``read_end`` - how far bytes were read: ``consumed`` plus a held-back partial last line.

``guard`` is the bytes right before ``consumed``: a file rewritten in place with the same first bytes (a fixed
header) and grown past the old position is still told apart from the one that was being read.
Streams are owned by the source's worker thread (see ``agent/tail/core.py``); nothing else mutates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from agent.fileid import pread_exact

GUARD_BYTES = 128
"""Bytes right before a stream's position kept (and fingerprinted in its checkpoint) to recognise it."""


@dataclass(eq=False, slots=True)
class Partial:
    """The parts of a container record that its runtime split over several lines, being joined (see
    ``agent/tail/partials.py``). Only a stream in the middle of such a record has one."""

    start: int
    """File position of the first part's line: checkpoints stay here until the record is handed on."""
    time: str
    stream: str
    """``stdout`` or ``stderr``: the record's time and stream are its first part's."""
    parts: list[str]
    """The messages so far, in order (joined with no separator)."""
    size: int
    """Their length in bytes (UTF-8; approximate for other encodings), kept under ``max_line_bytes``."""


@dataclass(eq=False, slots=True)
class Stream:
    path: str
    dev: int
    ino: int
    real: str = ""
    """``path`` with symlinks resolved (the directory a rotation renames the file within)."""
    key: str | None = None
    """Checkpoint key, given when the stream first hands something out."""
    fd: int | None = None

    head: bytes | None = None
    """First ``fingerprint_bytes`` bytes as last seen (grows with a short file); None until verified."""
    head_fp: str = ""
    head_len: int = 0
    """Fingerprint of the head of a restored checkpoint, checked before the stream is trusted."""
    guard: bytes = b""
    """The bytes right before ``consumed`` (up to GUARD_BYTES)."""
    guard_fp: str = ""
    guard_len: int = 0
    """Fingerprint of those bytes from a restored checkpoint (the bytes themselves are not stored)."""

    consumed: int = 0
    read_end: int = 0
    skipping_long_line: bool = False
    """Inside an over-long line whose rest (past ``max_line_bytes``) is being skipped."""
    checkpoint_pos: int = 0
    checkpoint_skipping: bool = False
    size: int = 0
    mtime_ns: int = 0

    draining: bool = False
    """Rotated away or deleted: read to the end through the descriptor, then finished."""
    drain_reason: str = ""
    idle_since: float | None = None

    record: list[str] = field(default_factory=list)
    """Lines of the multiline record being assembled."""
    record_start: int = 0
    record_updated: float = 0.0

    partial: Partial | None = None
    """A container record split by its runtime, not complete yet. None, not an empty object, for the same
    reason as ``read_heads``: almost no stream is ever in the middle of one."""
    partial_skip: str | None = None
    """The runtime stream (``stdout``/``stderr``) whose record was cut at ``max_line_bytes``: its remaining
    parts are skipped (counted) up to its final part."""

    read_heads: tuple[bytes, ...] = ()
    """copytruncate: the first bytes of the generations of this file read so far (their copies are known).
    A tuple, replaced when it grows: almost no stream ever has one, and an empty list would cost every stream
    56 B (2,000 idle files: 110 KiB)."""
    copies_checked: bool = True
    """False from a copytruncate restart until the file is seen with content again: then copies newer than
    ``copied_until_ns`` are looked at once (a rotation while the file was still empty cannot be seen)."""
    copied_until_ns: int = 0
    """copytruncate: the mtime of the last copy of this file drained at a truncation; a copy newer than that
    with content never read is a generation the reader missed entirely (see Rotation.restart_truncated)."""
    last_activity: float = 0.0
    last_error: str | None = None
    warned_long: bool = False
    warned_encoding: bool = False

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)


class FileStat:
    """What a deep scan keeps per file (a full ``os.stat_result`` is ~645 B, with 2,000 files per scan)."""

    __slots__ = ("st_dev", "st_ino", "st_mtime_ns", "st_size")

    def __init__(self, st: os.stat_result) -> None:
        self.st_dev, self.st_ino, self.st_size, self.st_mtime_ns = st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def real_path(path: str) -> str:
    """realpath, sharing the path's string object when they are equal (the usual case)."""
    real = os.path.realpath(path)
    return path if real == path else real


def guard_before(stream: Stream, position: int) -> bytes:
    """The bytes right before ``position`` in the stream's open file (the guard a checkpoint there needs)."""
    if position <= 0 or stream.fd is None:
        return b""
    k = min(GUARD_BYTES, position)
    return pread_exact(stream.fd, k, position - k)


def current_path(fd: int) -> str | None:
    """The name an open file has now (it may have been renamed since it was opened); None once deleted."""
    try:
        current = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return current if current.startswith("/") and not current.endswith(" (deleted)") else None
