"""Discovery's eyes: which files the source's globs match, found at a cost proportional to what changed.

A glob is walked directory by directory; each directory the walk visits is a :class:`Node` that remembers
what matched there (file names with their inode from the directory entry, symlinks, the subdirectories to
walk on) and the directory's inode and mtime when it was listed. Creating, removing or renaming an entry
changes a directory's mtime, so a scan stat()s each visited directory once and lists again only those that
changed: the files of an unchanged directory are the same files, and none of them is stat()ed. What a scan
found different is handed to discovery as a delta (``came``, ``gone``); discovery never walks every file.

Three modes:

* ``incremental`` (every scan after the first while events are trusted): changed directories only, a delta.
* ``full``: the same listings, but the result names every matching file (``matched``), so discovery can
  rebuild its indexes (a case the delta does not settle, e.g. a hard-linked file losing one of its names).
* ``deep``: every directory listed again and every file stat()ed (the first scan, an inotify overflow).

File systems keep coarse timestamps: a directory changed again within the tick of its listing keeps its
mtime. A directory whose mtime is within ``SETTLE_NS`` of its listing is therefore listed again at the next
scan, whatever its mtime says. Symlinks (whose targets change without their directory changing), literal
file names and entries whose stat() failed are stat()ed at every scan. A new entry is stat()ed once (its
identity is the one stat() gives: on some overlayfs setups ``d_ino`` is not ``st_ino``).

Every directory is watched (inotify) before it is first listed, so nothing created after the listing goes
unseen; a directory that cannot be watched (the watch limit) is polled by the source (see ``core.py``).
"""

from __future__ import annotations

import os
import re
import stat as statmod
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from agent.fileid import glob_to_regex, has_magic, nearest_existing_dir
from agent.tail.globs import MAX_GLOB_DIRECTORIES, PathFilter, is_dir, join_path
from agent.tail.identity import out_of_resources
from agent.tail.stream import FileStat

ScanMode = Literal["deep", "full", "incremental"]
Ident = tuple[int, int]


SETTLE_NS = 1_000_000_000
"""A directory modified this shortly before its listing is listed again at the next scan (coarse mtimes)."""


def _split(pattern: str) -> tuple[str, tuple[str, ...]]:
    """(base, components): the longest leading run of literal directories, then the rest of the glob."""
    parts = pattern.split("/")
    i = 1
    while i < len(parts) - 1 and not has_magic(parts[i]):
        i += 1
    base = "/".join(parts[:i]) or "/"
    return base, tuple(parts[i:])


@dataclass(slots=True, eq=False)
class Node:
    """One directory as one glob component sees it, as last listed."""

    directory: str
    dev: int = -1
    ino: int = -1
    mtime_ns: int = -1
    settled: bool = False
    """Listed long enough after its last change: an unchanged mtime now means unchanged entries."""
    stale: bool = True
    """List again at the next scan whatever the mtime says (new, a sweep, a listing that failed)."""
    watched: bool = False
    files: dict[str, int] = field(default_factory=dict)
    """Path -> inode from the directory entry, of the regular files matching the last component. The path
    strings are the ones streams and indexes hold (one object per path)."""
    odd: dict[str, Ident] | None = None
    """Paths whose identity from stat() is not (directory's device, d_ino): overlayfs, mount points."""
    links: tuple[str, ...] = ()
    """Paths stat()ed at every scan: symlinks, literal names, entries whose stat() failed."""
    subdirs: tuple[str, ...] = ()
    """Directories the walk goes on into (components before the last one)."""
    visit: int = 0

    def ident(self, path: str, d_ino: int) -> Ident:
        odd = self.odd
        if odd is not None:
            found = odd.get(path)
            if found is not None:
                return found
        return (self.dev, d_ino)


@dataclass(slots=True)
class ScanResult:
    mode: ScanMode
    matched: dict[Ident, tuple[str, FileStat | None]] = field(default_factory=dict)
    """``full``/``deep``: every matching file, by identity (stat None: identity known, not stat()ed now)."""
    came: list[tuple[str, Ident, FileStat | None]] = field(default_factory=list)
    """Paths that match now with an identity they did not have at the last scan."""
    gone: list[tuple[str, Ident]] = field(default_factory=list)
    """Paths (with the identity they had) that no longer match, or now hold another identity."""
    touched: list[tuple[str, Ident, FileStat]] = field(default_factory=list)
    """Paths stat()ed again with an unchanged identity (symlinks, literal names): their sizes are news."""
    problems: dict[str, str] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    """Paths whose state this scan knows (stat()ed or listed), so problems about them can be cleared."""
    stats: dict[str, FileStat] = field(default_factory=dict)
    """``full``/``deep``: the files stat()ed by this scan."""
    counts: dict[Ident, int] = field(default_factory=dict)
    """``full``/``deep``: how many matching paths each identity has, where more than one (hard links,
    symlinks); the others in ``matched`` have one. (No set of every path: 100,000 of them for nothing.)"""
    unlisted: list[str] = field(default_factory=list)
    """Directories that could not be listed for want of descriptors: what is in them is unknown."""
    listed: int = 0
    """Directories listed by this scan (the others were unchanged)."""

    @property
    def incomplete(self) -> bool:
        return bool(self.unlisted)


class Scanner:
    def __init__(self, paths: PathFilter) -> None:
        self.paths = paths
        self._plans = [_split(p) for p in paths.patterns]
        self._rx: dict[str, re.Pattern[str]] = {}
        self._nodes: dict[tuple[int, int, str], Node] = {}
        self._by_dir: dict[str, list[Node]] = {}
        self._links: dict[str, Ident] = {}
        """Last identity of every path stat()ed at each scan."""
        self._scan_no = 0
        self.ensure_watched: Callable[[str, bool], bool] | None = None
        """Watch a directory before it is first listed; False: it cannot be watched (the source polls it)."""
        self.dirs_version = 0
        """Changes whenever the set of visited directories changes."""
        self.missing: list[str] = []
        """Glob bases that do not exist (their nearest existing ancestor is watched, to see them appear)."""
        self._sweep: list[Node] = []
        self._sweep_at = 0

    # --- what the source asks ------------------------------------------------------------------------------

    def directories(self) -> set[str]:
        return set(self._by_dir)

    def unwatched(self) -> Iterator[Node]:
        return (n for n in self._nodes.values() if not n.watched)

    def opened(self, path: str, ident: Ident) -> None:
        """A stream was opened on ``path`` with the identity its fstat() gave: hold the stream's inode int
        (28 B a file) and, where the directory entry's d_ino said otherwise (overlayfs), that identity."""
        for node in self._by_dir.get(os.path.dirname(path), ()):
            d_ino = node.files.get(path)
            if d_ino is None:
                continue
            if (node.dev, d_ino) == ident:
                node.files[path] = ident[1]
            else:
                if node.odd is None:
                    node.odd = {}
                node.odd[path] = ident

    def mark_stale(self, directory: str) -> None:
        """List ``directory`` again at the next scan (a file there was found not to be what its listing said)."""
        for node in self._by_dir.get(directory, ()):
            node.stale = True

    def node_count(self) -> int:
        return len(self._nodes)

    def file_count(self) -> int:
        return sum(len(n.files) + len(n.links) for n in self._nodes.values())

    def nodes_of(self, directory: str) -> list[Node]:
        return self._by_dir.get(directory, [])

    def holds(self, path: str) -> bool:
        """Does ``path`` match now (as of the last scan)?"""
        if path in self._links:
            return True
        return any(path in n.files for n in self._by_dir.get(os.path.dirname(path), ()))

    def sweep(self, budget: int) -> int:
        """Mark directories to be listed again at the next scan whatever their mtime, in turn, until about
        ``budget`` entries are covered (at least one directory): every directory is listed again within
        ``ceil(entries / budget)`` calls. Returns the entries covered."""
        covered = 0
        while covered < budget:
            if self._sweep_at >= len(self._sweep):
                self._sweep, self._sweep_at = list(self._nodes.values()), 0
                if not self._sweep:
                    break
            node = self._sweep[self._sweep_at]
            self._sweep_at += 1
            node.stale = True
            covered += 1 + len(node.files) + len(node.links)
            if self._sweep_at >= len(self._sweep):
                break  # one round per call at most
        return covered

    # --- a scan ----------------------------------------------------------------------------------------

    def scan(self, mode: ScanMode) -> ScanResult:
        self._scan_no += 1
        result = ScanResult(mode)
        links: list[str] = []
        missing: list[str] = []
        for p, (base, parts) in enumerate(self._plans):
            if os.path.isdir(base):
                result.checked.add(base)
                if not os.access(base, os.R_OK | os.X_OK):
                    result.problems[base] = "permission denied (directory)"
            elif parts and not os.path.lexists(base):
                missing.append(nearest_existing_dir(base))
            self._walk(p, base, parts, mode, result, links)
        self.missing = missing
        self._recheck(links, mode, result)
        self._forget_unvisited(result)
        if mode != "incremental":
            self._build_matched(result)
        return result

    def _walk(self, p: int, base: str, parts: tuple[str, ...], mode: ScanMode, result: ScanResult,
              links: list[str]) -> None:
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[str, int]] = [(base, 0)]
        last = len(parts) - 1
        while stack:
            directory, k = stack.pop()
            comp = parts[k]
            node = self._visit(p, k, directory, comp, k == last, mode, result, seen)
            if node is None:
                continue
            if node.links:
                links.extend(node.links)
            if comp == "**":
                if k < last:
                    stack.append((directory, k + 1))  # "**" matching no directory at all
                stack.extend((d, k) for d in reversed(node.subdirs))
            else:
                stack.extend((d, k + 1) for d in reversed(node.subdirs))

    def _visit(self, p: int, k: int, directory: str, comp: str, final: bool, mode: ScanMode, result: ScanResult,
               seen: set[tuple[int, int]]) -> Node | None:
        try:
            st = os.stat(directory)
        except OSError:
            return None
        if not statmod.S_ISDIR(st.st_mode):
            return None
        if comp == "**":
            if (st.st_dev, st.st_ino) in seen or len(seen) >= MAX_GLOB_DIRECTORIES:
                return None  # walked already (a loop, or two links to one directory)
            seen.add((st.st_dev, st.st_ino))
        key = (p, k, directory)
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = Node(directory)
            self._by_dir.setdefault(directory, []).append(node)
            self.dirs_version += 1
        node.visit = self._scan_no
        renew = node.ino != -1 and (node.ino != st.st_ino or node.dev != st.st_dev)  # another directory there
        if (renew or not node.watched) and self.ensure_watched is not None:
            node.watched = self.ensure_watched(directory, renew)  # before the listing: nothing after it is unseen
        if (mode == "deep" or node.stale or not node.settled or node.ino != st.st_ino
                or node.mtime_ns != st.st_mtime_ns or node.dev != st.st_dev):
            self._list(node, st, comp, final, mode, result)
        return node

    def _list(self, node: Node, st: os.stat_result, comp: str, final: bool, mode: ScanMode,
              result: ScanResult) -> None:
        directory = node.directory
        before = time.time_ns()
        files: dict[str, int] | None = None
        links: list[str] = []
        subdirs: list[str] = []
        try:
            if comp == "**" or has_magic(comp):
                rx = None if comp == "**" else self._regex(comp)
                hidden_ok = comp.startswith(".")
                files = {} if final else None
                with os.scandir(directory) as it:
                    entries = sorted(((e.name, e) for e in it if (hidden_ok or not e.name.startswith("."))
                                      and (rx is None or rx.match(e.name))), key=lambda ne: ne[0])
                for name, entry in entries:
                    path = join_path(directory, name)
                    if comp == "**" and is_dir(entry):
                        subdirs.append(path)
                        continue
                    if not final:
                        if is_dir(entry):
                            subdirs.append(path)
                        continue
                    if self.paths.excluded(path):
                        continue
                    try:
                        if entry.is_symlink():
                            links.append(path)
                        elif entry.is_file(follow_symlinks=False):
                            assert files is not None
                            files[path] = entry.inode()
                    except OSError:
                        links.append(path)
            elif final:
                path = join_path(directory, comp)
                if not self.paths.excluded(path):
                    links.append(path)
            else:
                path = join_path(directory, comp)
                if os.path.isdir(path):
                    subdirs.append(path)
        except OSError as exc:
            if out_of_resources(exc):
                result.unlisted.append(directory)
                result.problems[directory] = f"cannot list the directory: {exc.strerror} (retried)"
                node.stale = True
                return  # what is in it is unknown: keep what was known
            files = {} if final else None  # not listable (e.g. permission denied): nothing matches there
            links, subdirs = [], []
        result.listed += 1
        result.checked.add(directory)
        node.dev, node.ino, node.mtime_ns = st.st_dev, st.st_ino, st.st_mtime_ns
        node.settled = st.st_mtime_ns < before - SETTLE_NS
        node.stale = False
        if tuple(subdirs) != node.subdirs:
            node.subdirs = tuple(subdirs)
        node.links = tuple(links)
        if files is not None or node.files:
            self._update_files(node, files or {}, mode, result)

    def _update_files(self, node: Node, fresh: dict[str, int], mode: ScanMode, result: ScanResult) -> None:
        """Apply a new listing to ``node.files`` in place (the path objects of unchanged entries stay)."""
        files = node.files
        for path in [p for p in files if p not in fresh]:
            result.gone.append((path, node.ident(path, files.pop(path))))
            if node.odd is not None:
                node.odd.pop(path, None)
        for path, d_ino in fresh.items():
            before = files.get(path)
            if before == d_ino and mode != "deep":
                continue
            old = node.ident(path, before) if before is not None else None
            if mode == "full":  # identity from the directory entry; whoever opens it checks (Scanner.opened)
                if old is not None:
                    result.gone.append((path, old))
                files[path] = d_ino
                if node.odd is not None:
                    node.odd.pop(path, None)
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            except OSError as exc:
                result.problems[path] = exc.strerror or str(exc)
                node.links = (*node.links, path)  # stat()ed at every scan until it works
                st = None
            if st is not None and not statmod.S_ISREG(st.st_mode):
                st = None
            ident = (st.st_dev, st.st_ino) if st is not None else None
            if before is not None and ident != old:
                result.gone.append((path, old))
            if ident is None:
                if before is not None:
                    del files[path]
                    if node.odd is not None:
                        node.odd.pop(path, None)
                continue
            files[path] = d_ino
            if ident != (node.dev, d_ino):
                if node.odd is None:
                    node.odd = {}
                node.odd[path] = ident
            elif node.odd is not None:
                node.odd.pop(path, None)
            if mode != "incremental":  # the result names every file anyway (matched): only keep the stat
                result.stats[path] = FileStat(st)  # type: ignore[arg-type]
            elif before is None or ident != old:
                result.came.append((path, ident, FileStat(st)))  # type: ignore[arg-type]

    def _recheck(self, links: list[str], mode: ScanMode, result: ScanResult) -> None:
        """The paths stat()ed at every scan: symlinks, literal names, entries that failed."""
        now: dict[str, Ident] = {}
        for path in dict.fromkeys(links):
            result.checked.add(path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if os.path.islink(path):
                    try:
                        result.problems[path] = f"dangling symlink -> {os.readlink(path)}"
                    except OSError:
                        result.problems[path] = "dangling symlink"
                continue
            except OSError as exc:
                result.problems[path] = exc.strerror or str(exc)
                continue
            if not statmod.S_ISREG(st.st_mode):
                continue
            ident = (st.st_dev, st.st_ino)
            now[path] = ident
            before = self._links.get(path)
            if before == ident:
                result.touched.append((path, ident, FileStat(st)))
                continue
            if before is not None:
                result.gone.append((path, before))
            result.came.append((path, ident, FileStat(st)))
        for path, ident in self._links.items():
            if path not in now:
                result.gone.append((path, ident))
        self._links = now

    def _forget_unvisited(self, result: ScanResult) -> None:
        """Directories the walk no longer reaches (deleted, renamed, no longer matching): their files are gone."""
        stale = [key for key, node in self._nodes.items() if node.visit != self._scan_no]
        for key in stale:
            node = self._nodes.pop(key)
            same = self._by_dir.get(node.directory, [])
            if node in same:
                same.remove(node)
            if not same:
                self._by_dir.pop(node.directory, None)
            for path, d_ino in node.files.items():
                result.gone.append((path, node.ident(path, d_ino)))
            self.dirs_version += 1

    def _build_matched(self, result: ScanResult) -> None:
        """Every matching file by identity (full and deep scans); stat()ed ones with their stat."""
        stats = result.stats
        stats.update((path, st) for path, _ident, st in (*result.came, *result.touched))
        matched, counts = result.matched, result.counts
        for node in self._nodes.values():
            for path, d_ino in node.files.items():
                ident = node.ident(path, d_ino)
                value = (path, stats.get(path))
                if matched.setdefault(ident, value) is not value:
                    counts[ident] = counts.get(ident, 1) + 1  # only identities with more than one path
        for path, ident in self._links.items():
            value = (path, stats.get(path))
            if matched.setdefault(ident, value) is not value:
                counts[ident] = counts.get(ident, 1) + 1

    def _regex(self, comp: str) -> re.Pattern[str]:
        rx = self._rx.get(comp)
        if rx is None:
            rx = self._rx[comp] = glob_to_regex(comp)
        return rx
