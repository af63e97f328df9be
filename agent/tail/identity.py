"""Is this file still the stream we were reading? And where did a rotated stream go?

A stream's identity is (device, inode) plus its first bytes (``head``) and the bytes right before its
position (``guard``); size alone misses a file rewritten past the old position (copytruncate with a quick
writer). Rotated names (``app.log.1``, ``app.log-20261127``) usually no longer match the glob, so a lost stream
is searched for in its directory: by inode (renamed) or by content (a copy).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Container, Iterable, Iterator

from agent.fileid import fingerprint, pread_exact
from agent.tail.stream import Stream

COPY_CANDIDATES = 64
"""At most this many files of a directory are opened when looking for a rotated copy (cost bound)."""
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


class SearchFailed(OSError):
    """A search could not be made (no descriptor to list or open with): not the same as "not found". A stream
    is never given up on that, or its position would be forgotten and its file read again from 0."""


def out_of_resources(exc: OSError) -> bool:
    return exc.errno in OUT_OF_RESOURCES


COMPRESSED_MAGIC = (b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"BZh")
"""gzip, xz, zstd, bzip2: a rotated file that starts so was compressed by the rotation."""
OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def holds_content(fd: int, st: os.stat_result, f: Stream) -> bool:
    """Does the open file hold the content ``f`` was reading (first bytes and bytes before the position)?"""
    if st.st_size < f.consumed:
        return False
    if f.head is not None:
        if f.head and pread_exact(fd, len(f.head), 0) != f.head:
            return False
    elif f.head_len:
        head = pread_exact(fd, f.head_len, 0)
        if len(head) != f.head_len or fingerprint(head) != f.head_fp:
            return False
    if f.guard:
        if pread_exact(fd, len(f.guard), f.consumed - len(f.guard)) != f.guard:
            return False
    elif f.guard_len:
        if fingerprint(pread_exact(fd, f.guard_len, f.consumed - f.guard_len)) != f.guard_fp:
            return False
    return True


def rewritten(f: Stream, st: os.stat_result, fingerprint_bytes: int) -> bool:
    """Truncated (copytruncate, ``: > file``) or rewritten in place, even if it grew past our position.
    A head that only grew (a short file filling up) is remembered."""
    assert f.fd is not None
    if st.st_size < f.read_end or st.st_size < f.size:
        return True
    head = pread_exact(f.fd, fingerprint_bytes, 0)
    if f.head is not None:
        common = min(len(head), len(f.head))
        if head[:common] != f.head[:common]:
            return True
    if f.guard and pread_exact(f.fd, len(f.guard), f.consumed - len(f.guard)) != f.guard:
        return True
    if f.head is None or len(head) > len(f.head):
        f.head = head
    return False


def search_dirs(f: Stream) -> list[str]:
    if not f.real:
        f.real = os.path.realpath(f.path)  # restored streams resolve lazily, on the worker thread
    dirs = [os.path.dirname(f.path)]
    if f.real and os.path.dirname(f.real) not in dirs:
        dirs.append(os.path.dirname(f.real))
    return dirs


def is_compressed(fd: int) -> bool:
    head = pread_exact(fd, 6, 0)
    return any(head.startswith(magic) for magic in COMPRESSED_MAGIC)


def later_generations(live: Stream, copy_path: str, copy_mtime_ns: int, *, skip: Container[tuple[int, int]],
                      heads: list[bytes]) -> list[tuple[str, int, bool]]:
    """Copies of the copytruncated file ``live`` newer than ``copy_path`` (the copy holding the content the
    reader was in), oldest first, opened.

    With copytruncate every generation is written into the same inode, and each rotation copies it to a new
    file. When the reader was behind (backpressure) across two rotations, the generation between them was
    never read and exists only as a copy newer than the one holding ``f``'s content: it must be read whole.
    Only files under rotated names of the same base count, never the live file, a followed identity or a
    copy of content the reader knows (``heads``); an archive is returned as such (``True``: the caller looks
    inside it, and reads it back whole when it holds a generation never read).
    """
    base = os.path.basename(live.path)
    found: list[tuple[int, str]] = []
    for _name, path, st in rotated_names(search_dirs(live), base):
        # ">=": rotations within one clock tick share an mtime; copies of what was read are told by their heads
        if path == copy_path or (st.st_dev, st.st_ino) in skip or st.st_mtime_ns < copy_mtime_ns or not st.st_size:
            continue
        found.append((st.st_mtime_ns, path))
    found.sort()
    out: list[tuple[str, int, bool]] = []
    for _mtime, path in found[:COPY_CANDIDATES]:
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            continue
        compressed = is_compressed(fd)
        if not compressed and any(h and pread_exact(fd, len(h), 0) == h for h in heads):
            os.close(fd)
            continue
        out.append((path, fd, compressed))
    return out


def _entries(dirs: Iterable[str], extra: Iterable[str]) -> Iterator[tuple[str, str, os.stat_result]]:
    """(name, path, lstat) of the files in ``dirs`` and of the ``extra`` paths (``rotated_paths`` matches)."""
    for d in dirs:
        try:
            entries = list(os.scandir(d))
        except OSError as exc:
            if out_of_resources(exc):
                raise SearchFailed(exc.errno, f"cannot list {d}: {exc.strerror}") from exc
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    yield entry.name, entry.path, entry.stat(follow_symlinks=False)
            except OSError:
                continue
    for path in extra:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield os.path.basename(path), path, st


def rotated_names(dirs: Iterable[str], base: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """Files in ``dirs`` whose names start with ``base`` (``app.log.1``, ``app.log-20261127.gz``), not ``base``."""
    for name, path, st in _entries(dirs, ()):
        if name != base and name.startswith(base):
            yield name, path, st


def find_in_dirs(f: Stream, *, same_inode: bool, followed: Container[tuple[int, int]], extra: Iterable[str] = ()
                 ) -> tuple[str, int, os.stat_result] | None:
    """The file holding ``f``'s content in its directory (or among ``extra`` paths, the matches of
    ``rotated_paths``), opened: by inode (renamed) or by content (a copy, never one of the ``followed``
    identities). Names that start with the original name first, newest first."""
    if not same_inode and not (f.head or f.head_len):
        return None
    base = os.path.basename(f.path)
    candidates: list[tuple[int, float, str]] = []
    for name, path, st in _entries(search_dirs(f), extra):
        ident = (st.st_dev, st.st_ino)
        if same_inode:
            if ident != f.ident:
                continue
        elif ident == f.ident or ident in followed or st.st_size < f.consumed:
            continue
        rank = 0 if name.startswith(base) else 1
        candidates.append((rank, -st.st_mtime, path))
    candidates = sorted(set(candidates), key=lambda c: (c[0], c[1]))
    for _rank, _mtime, path in candidates[:COPY_CANDIDATES]:
        try:  # an unrelated unreadable file here is not this source's problem
            fd = os.open(path, OPEN_FLAGS)
        except OSError as exc:
            if out_of_resources(exc):
                raise SearchFailed(exc.errno, f"cannot open {path}: {exc.strerror}") from exc
            continue
        try:
            st = os.fstat(fd)
            if holds_content(fd, st, f):
                return path, fd, st
        except OSError:
            pass
        os.close(fd)
    return None
