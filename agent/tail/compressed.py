"""A rotated stream that exists only compressed (logrotate ``compress`` without ``delaycompress`` while the
agent was stopped): its unread tail is read from the compressed file.

The compressed file is the stream only if its decompressed first bytes and the bytes before the stream's
position are the stream's (the same identity check as for a plain copy). Then the part from just before
the position to the end is decompressed into a sparse temporary file (the first bytes at 0, the rest at
their own offsets, nothing in between takes space), which the source reads like any rotated file, through
its descriptor, and finishes. gzip, bzip2 and xz come with Python; zstd with the ``zstandard`` package.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
from collections.abc import Callable, Iterable
from typing import IO, Any

import structlog

from agent.fileid import fingerprint
from agent.tail.identity import OPEN_FLAGS, SearchFailed, out_of_resources
from agent.tail.stream import Stream

log = structlog.get_logger(__name__)

CHUNK = 1 << 20


def _zstd(path: str) -> IO[bytes]:
    import zstandard

    raw = open(path, "rb")  # closed with the reader
    return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[no-any-return]


OPENERS: list[tuple[bytes, Callable[[str], Any]]] = [
    (b"\x1f\x8b", gzip.open),
    (b"BZh", bz2.open),
    (b"\xfd7zXZ\x00", lzma.open),
    (b"\x28\xb5\x2f\xfd", _zstd),
]


def opener_for(path: str) -> Callable[[str], Any] | None:
    try:
        fd = os.open(path, OPEN_FLAGS)
    except OSError as exc:
        if out_of_resources(exc):
            raise SearchFailed(exc.errno, f"cannot open {path}: {exc.strerror}") from exc
        return None
    try:
        magic = os.pread(fd, 6, 0)
    finally:
        os.close(fd)
    return next((open_ for prefix, open_ in OPENERS if magic.startswith(prefix)), None)


def _read_exact(src: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = src.read(min(CHUNK, n - got))
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _skip(src: IO[bytes], n: int) -> int:
    skipped = 0
    while skipped < n:
        chunk = src.read(min(CHUNK, n - skipped))
        if not chunk:
            break
        skipped += len(chunk)
    return skipped


def _head_is(f: Stream, head: bytes) -> bool:
    if f.head:
        return head[: len(f.head)] == f.head
    return bool(f.head_len) and len(head) >= f.head_len and fingerprint(head[: f.head_len]) == f.head_fp


def _guard_is(f: Stream, guard: bytes) -> bool:
    if f.guard:
        return guard == f.guard
    return not f.guard_len or fingerprint(guard) == f.guard_fp


def unpack(path: str, f: Stream, fingerprint_bytes: int) -> tuple[int, int] | None:
    """The decompressed stream as a sparse temporary file, opened: (descriptor, bytes unpacked after the
    position); None when ``path`` is not this stream (or not readable as compressed)."""
    opener = opener_for(path)
    if opener is None:
        return None
    guard_len = len(f.guard) if f.guard else f.guard_len
    start = max(0, f.consumed - guard_len)  # from here on the decompressed bytes are written out
    try:
        with opener(path) as src:
            head = _read_exact(src, fingerprint_bytes)
            if not _head_is(f, head):
                return None
            if start >= len(head):
                if _skip(src, start - len(head)) < start - len(head):
                    return None  # shorter than the position: another file
                pending = b""
            else:
                pending = head[start:]
            pending += _read_exact(src, max(0, guard_len - len(pending)))
            if len(pending) < guard_len or not _guard_is(f, pending[:guard_len]):
                return None
            import tempfile  # only for a compressed generation: it brings shutil, bz2, lzma (~0.6 MiB)

            tmp = tempfile.TemporaryFile(prefix="dutytail-unpacked-")
            try:
                tmp.write(head)
                tmp.seek(start)
                tmp.write(pending)
                written = start + len(pending)
                while chunk := src.read(CHUNK):
                    tmp.write(chunk)
                    written += len(chunk)
                tmp.flush()
                fd = os.dup(tmp.fileno())
            finally:
                tmp.close()
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        if isinstance(exc, OSError) and out_of_resources(exc):
            raise SearchFailed(exc.errno, f"cannot unpack {path}: {exc.strerror}") from exc
        log.info("tail.compressed_unreadable", path=path, error=f"{type(exc).__name__}: {exc}")
        return None
    return fd, max(0, written - f.consumed)


def decompressed_head(path: str, n: int) -> bytes | None:
    """The first ``n`` decompressed bytes of an archive (None when it is not one this module reads)."""
    opener = opener_for(path)
    if opener is None:
        return None
    try:
        with opener(path) as src:
            return _read_exact(src, n)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None


def unpack_whole(path: str) -> int | None:
    """An archive decompressed whole into a temporary file, opened (a generation never read as plain text)."""
    opener = opener_for(path)
    if opener is None:
        return None
    import tempfile  # only for a compressed generation: it brings shutil, bz2, lzma (~0.6 MiB)

    try:
        with opener(path) as src, tempfile.TemporaryFile(prefix="dutytail-unpacked-") as tmp:
            while chunk := src.read(CHUNK):
                tmp.write(chunk)
            tmp.flush()
            return os.dup(tmp.fileno())
    except (OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        if isinstance(exc, OSError) and out_of_resources(exc):
            raise SearchFailed(exc.errno, f"cannot unpack {path}: {exc.strerror}") from exc
        log.info("tail.compressed_unreadable", path=path, error=f"{type(exc).__name__}: {exc}")
        return None


def find_compressed(f: Stream, dirs: Iterable[str], extra: Iterable[str], fingerprint_bytes: int
                    ) -> tuple[str, int, int] | None:
    """The compressed rotation of ``f`` among names that start with its name (in its directories) and the
    ``rotated_paths`` matches: (path, descriptor of the unpacked copy, bytes unpacked after the position)."""
    base = os.path.basename(f.path)
    candidates: list[tuple[float, str]] = []
    for d in dirs:
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                if entry.name.startswith(base) and entry.name != base and entry.is_file(follow_symlinks=False):
                    candidates.append((-entry.stat().st_mtime, entry.path))
    for path in extra:
        with contextlib.suppress(OSError):
            candidates.append((-os.stat(path).st_mtime, path))
    for _mtime, path in sorted(set(candidates)):
        found = unpack(path, f, fingerprint_bytes)
        if found is not None:
            return path, found[0], found[1]
    return None
