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
from dataclasses import dataclass
from typing import Any

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


class _Rare:
    """The fields of a stream that almost no stream ever sets (restored-checkpoint fingerprints, draining,
    multiline timing, container partials, copytruncate history, warnings, errors): one object, made when the
    first of them is set, instead of 16 slots in each of 100,000 streams (~128 B each)."""

    __slots__ = ("copied_until_ns", "copies_checked", "drain_reason", "guard_fp", "guard_len", "head_fp",
                 "head_len", "idle_since", "last_error", "partial", "partial_skip", "read_heads", "record_start",
                 "record_updated", "warned_encoding", "warned_long")

    def __init__(self) -> None:
        for name, default in RARE.items():
            setattr(self, name, default)


RARE: dict[str, Any] = {
    "head_fp": "", "head_len": 0, "guard_fp": "", "guard_len": 0, "drain_reason": "", "idle_since": None,
    "record_start": 0, "record_updated": 0.0, "partial": None, "partial_skip": None, "read_heads": (),
    "copies_checked": True, "copied_until_ns": 0, "last_error": None, "warned_long": False,
    "warned_encoding": False,
}


class Stream:
    """The state of one file identity (see the module docstring). Identity is the object (no ``__eq__``).

    Fields, in the order they matter:

    * ``path``, ``dev``, ``ino``; ``real`` (``path`` with symlinks resolved: the directory a rotation renames the
      file within); ``key`` (checkpoint key, given when the stream first hands something out); ``fd``;
    * ``head``: the first ``fingerprint_bytes`` bytes as last seen (grows with a short file), None until
      verified; ``head_fp``/``head_len``: the fingerprint of the head of a restored checkpoint, checked before
      the stream is trusted;
    * ``guard``: the bytes right before ``consumed`` (up to GUARD_BYTES); ``guard_fp``/``guard_len``: their
      fingerprint from a restored checkpoint (the bytes themselves are not stored);
    * ``consumed``, ``read_end``, ``checkpoint_pos``, ``skipping_long_line`` (inside an over-long line whose
      rest is being skipped), ``checkpoint_skipping``, ``size``, ``mtime_ns``;
    * ``draining`` (rotated away or deleted: read to the end through the descriptor, then finished),
      ``drain_reason``, ``idle_since``;
    * ``record`` (lines of the multiline record being assembled; an empty tuple, not a list of its own, until
      one starts), ``record_start``, ``record_updated``;
    * ``partial``: a container record split by its runtime, not complete yet (None: almost no stream is ever
      in the middle of one); ``partial_skip``: the runtime stream (``stdout``/``stderr``) whose record was cut
      at ``max_line_bytes``: its remaining parts are skipped (counted) up to its final part;
    * ``read_heads`` (copytruncate: the first bytes of the generations of this file read so far: their copies
      are known), ``copies_checked`` (False from a copytruncate restart until the file is seen with content
      again: then copies newer than ``copied_until_ns`` are looked at once), ``copied_until_ns`` (the mtime of
      the last copy of this file drained at a truncation; a copy newer than that with content never read is a
      generation the reader missed entirely, see Rotation.restart_truncated);
    * ``last_activity``, ``names`` (how many matching paths lead to this identity as of the last scan: more
      than one is a hard link or a symlink and its target; 0 once no glob matches it), ``last_error``,
      ``warned_long``, ``warned_encoding``.

    The fields in ``RARE`` live in one object made when the first of them is set (``_rare``): reading one
    that was never set gives its default.
    """

    __slots__ = ("_rare", "checkpoint_pos", "checkpoint_skipping", "consumed", "dev", "draining", "fd", "guard",
                 "head", "ino", "key", "last_activity", "mtime_ns", "names", "path", "read_end", "real", "record",
                 "size", "skipping_long_line")

    def __init__(self, path: str, dev: int, ino: int, real: str = "", key: str | None = None,
                 fd: int | None = None, head: bytes | None = None, guard: bytes = b"", consumed: int = 0,
                 read_end: int = 0, skipping_long_line: bool = False, checkpoint_pos: int = 0,
                 checkpoint_skipping: bool = False, size: int = 0, mtime_ns: int = 0, draining: bool = False,
                 record: list[str] | tuple[()] = (), last_activity: float = 0.0, names: int = 0,
                 **rare: Any) -> None:
        self.path, self.dev, self.ino, self.real, self.key, self.fd = path, dev, ino, real, key, fd
        self.head, self.guard, self.consumed, self.read_end = head, guard, consumed, read_end
        self.skipping_long_line, self.checkpoint_pos, self.checkpoint_skipping = (
            skipping_long_line, checkpoint_pos, checkpoint_skipping)
        self.size, self.mtime_ns, self.draining, self.record = size, mtime_ns, draining, record
        self.last_activity, self.names = last_activity, names
        self._rare: _Rare | None = None
        for name, value in rare.items():
            if name not in RARE:
                raise TypeError(f"Stream() got an unexpected keyword argument {name!r}")
            setattr(self, name, value)

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def __repr__(self) -> str:
        return (f"Stream(path={self.path!r}, dev={self.dev}, ino={self.ino}, key={self.key!r}, fd={self.fd}, "
                f"consumed={self.consumed}, size={self.size}, draining={self.draining})")

    # declared for type checkers; replaced by the properties made below
    head_fp: str
    head_len: int
    guard_fp: str
    guard_len: int
    drain_reason: str
    idle_since: float | None
    record_start: int
    record_updated: float
    partial: Partial | None
    partial_skip: str | None
    read_heads: tuple[bytes, ...]
    copies_checked: bool
    copied_until_ns: int
    last_error: str | None
    warned_long: bool
    warned_encoding: bool


def _rare_property(name: str, default: Any) -> property:
    def get(self: Stream) -> Any:
        rare = self._rare
        return default if rare is None else getattr(rare, name)

    def set_(self: Stream, value: Any) -> None:
        rare = self._rare
        if rare is None:
            if value is default or (type(value) is type(default) and value == default):
                return  # setting the default on a stream that has none of these: nothing to keep
            rare = self._rare = _Rare()
        setattr(rare, name, value)

    return property(get, set_)


for _name, _default in RARE.items():
    setattr(Stream, _name, _rare_property(_name, _default))
del _name, _default


class FileStat:
    """What a deep scan keeps per file (a full ``os.stat_result`` is ~645 B, with 2,000 files per scan)."""

    __slots__ = ("st_dev", "st_ino", "st_mtime_ns", "st_size")

    def __init__(self, st: os.stat_result) -> None:
        self.st_dev, self.st_ino, self.st_size, self.st_mtime_ns = st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


_DEVICES: dict[int, int] = {}


def device(dev: int) -> int:
    """One int object per device number (100,000 streams on one file system share it, not 28 B each)."""
    return _DEVICES.setdefault(dev, dev)


def real_path(path: str, fd: int | None = None) -> str:
    """realpath, sharing the path's string object when they are equal (the usual case). With the file open on
    ``fd``, the kernel's name for it (one readlink instead of an lstat per path component: 100,000 files)."""
    real = current_path(fd) if fd is not None else None
    if real is None:
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
