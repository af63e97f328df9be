"""Rotated siblings of a watched file: which of them hold a generation the source never read.

An application that rotates its own log fast (RotatingFileHandler in an error storm, logrotate ``nocreate``
with a quick writer) can create ``app.log``, fill it and rename it to ``app.log.1`` before the reader opened
it. The inotify handler opens such births at once (``HintBox``), but it can lag behind the storm and grab a
later generation. This ledger is the safety net that never depends on timing: whenever births happened
under a watched name, the directory is listed, and a sibling (a name that starts with the watched name) whose
identity *and* first bytes the source has never seen is a generation to read whole.

Identity alone is not enough: RotatingFileHandler deletes its oldest backup just before it creates the next
file, and the file system hands the freed inode number to that new file. So the ledger keeps, per identity,
the fingerprint of the first bytes, and a reused inode with other content is new.
"""

from __future__ import annotations

import collections
import os
import stat
from collections.abc import Callable, Container, Iterable

from agent.fileid import fingerprint, has_magic, pread_exact
from agent.tail.compressed import decompressed_head
from agent.tail.globs import PathFilter, expand_glob
from agent.tail.identity import OPEN_FLAGS, SearchFailed, is_compressed, rotated_names
from agent.tail.stream import Stream

Ident = tuple[int, int]
Seen = tuple[int, int, str]  # size, mtime_ns, fingerprint of the first bytes
READ_HEADS = 4096  # fingerprints of streams read whole kept (an archive of one of them is not a new generation)


class Siblings:
    def __init__(self, paths: PathFilter, fingerprint_bytes: int, rotated_paths: Iterable[str] = ()) -> None:
        self._fp_bytes = fingerprint_bytes
        # watched names without wildcards: their rotated names match no glob (with one, the glob finds them)
        self._bases = sorted({os.path.split(p) for p in paths.patterns
                              if not has_magic(p) and not paths.excluded(p)})
        # where rotations go when not beside the file (logrotate olddir): every match there is a sibling
        self._rotated = [os.path.abspath(os.path.expanduser(p)) for p in rotated_paths]
        self._seen: dict[Ident, Seen] = {}
        self._read_heads: collections.OrderedDict[str, None] = collections.OrderedDict()
        """Fingerprints of the first bytes of streams read whole: an archive of one of them is not new."""

    @property
    def active(self) -> bool:
        return bool(self._bases or self._rotated)

    def record(self, stream: Stream) -> None:
        """A stream the source followed: its content is known (read now or through its checkpoint)."""
        if stream.fd is None:
            return
        try:
            st = os.fstat(stream.fd)
        except OSError:
            return
        head = pread_exact(stream.fd, self._fp_bytes, 0)
        fp = fingerprint(head)
        self._seen[stream.ident] = (st.st_size, st.st_mtime_ns, fp)
        self._read_heads[fp] = None
        while len(self._read_heads) > READ_HEADS:
            self._read_heads.popitem(last=False)

    def baseline(self) -> None:
        """At the first scan: everything there already is history (or found through a checkpoint)."""
        for path, st in self._entries():
            self._remember(path, st)

    def unread(self, followed: Container[Ident], heads: Callable[[], set[str]]) -> list[tuple[str, int, bool]]:
        """Siblings never seen, opened, oldest first: (path, descriptor, compressed). Not a followed identity,
        not a known identity with the same first bytes, not a copy or an archive of content already read
        (``heads()``: the first bytes of the followed streams now, asked for only when a candidate needs it;
        and of streams read whole)."""
        known: set[str] | None = None
        found: list[tuple[int, str, int, bool]] = []
        chosen: set[str] = set()  # a copy and its archive being written: one generation, read once
        for path, st in self._entries():
            ident = (st.st_dev, st.st_ino)
            if ident in followed:
                continue
            seen = self._seen.get(ident)
            if seen is not None and seen[:2] == (st.st_size, st.st_mtime_ns):
                continue  # known and untouched (a rename changes neither)
            try:
                fd = os.open(path, OPEN_FLAGS)
            except OSError:
                continue
            head = pread_exact(fd, self._fp_bytes, 0)
            fp = fingerprint(head)
            self._seen[ident] = (st.st_size, st.st_mtime_ns, fp)
            if (seen is not None and seen[2] == fp) or not head:
                os.close(fd)
                continue
            compressed = is_compressed(fd)
            if compressed:
                inner = decompressed_head(path, self._fp_bytes)
                fp = fingerprint(inner) if inner else fp
            if fp in self._read_heads or (compressed and not inner):
                os.close(fd)
                continue
            if known is None:
                known = heads()
            if fp in known or fp in chosen:
                os.close(fd)
                continue
            chosen.add(fp)
            found.append((st.st_mtime_ns, path, fd, compressed))
        found.sort()
        return [(path, fd, compressed) for _mtime, path, fd, compressed in found]

    def _remember(self, path: str, st: os.stat_result) -> None:
        try:
            fd = os.open(path, OPEN_FLAGS)
        except OSError:
            return
        try:
            head = pread_exact(fd, self._fp_bytes, 0)
        finally:
            os.close(fd)
        self._seen[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns, fingerprint(head))

    def _entries(self) -> Iterable[tuple[str, os.stat_result]]:
        present: set[Ident] = set()
        for directory, base in self._bases:
            try:
                for _name, path, st in rotated_names([directory], base):
                    present.add((st.st_dev, st.st_ino))
                    yield path, st
            except SearchFailed:
                continue  # out of descriptors: the next birth looks again
        for pattern in self._rotated:
            for path in expand_glob(pattern):
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in present:
                    present.add((st.st_dev, st.st_ino))
                    yield path, st
        for gone in [i for i in self._seen if i not in present]:
            del self._seen[gone]  # bounded by what exists
