"""Discovery: which files the source's globs match now, by identity, at one of three costs.

stat() of thousands of idle files is what makes naive tailers expensive, so a scan is one of:

* ``deep``: stat() every file (polling mode, the first scan, every 6th periodic rescan, inotify overflow).
* ``light`` (an inotify event asked for a rescan): list directories and take a file's identity from the
  directory entry (d_ino) when it equals the stream already followed at that path: one readdir per
  directory. Where d_ino differs from st_ino (some overlayfs setups) the hint never matches and files are
  stat()ed, which is only slower.
* ``cached`` (periodic safety net while inotify works): a directory whose inode and mtime did not change
  since its last listing has the same entries; only its symlinks and failing entries are looked at again.
  One stat() per directory.
"""

from __future__ import annotations

import os
import re
import stat as statmod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from agent.fileid import glob_to_regex, has_magic, nearest_existing_dir, watch_base
from agent.tail.identity import out_of_resources
from agent.tail.stream import FileStat, Stream

ScanMode = Literal["deep", "light", "cached"]
Ident = tuple[int, int]
WatchSpec = tuple[str, bool]  # directory, recursive


MAX_GLOB_DIRECTORIES = 100_000
"""Directories one glob may walk (a bound against a file system that is a maze, not only a loop)."""


def expand_glob(pattern: str, unlisted: list[str] | None = None) -> list[str]:
    """``glob.glob(pattern, recursive=True)`` that walks each directory once: a symlink loop under ``**``
    (``a/link -> ..``) kept a core at 100% forever. Directories are known by (device, inode), symlinked
    ones followed as glob does; names starting with a dot match only a component that starts with one.
    Directories that could not be listed for want of descriptors are added to ``unlisted``."""
    parts = pattern.split("/")
    found: set[str] = set()
    seen: set[tuple[int, int]] = set()
    start = "/" if pattern.startswith("/") else "."
    _expand(start, parts[1:] if pattern.startswith("/") else parts, found, seen,
            unlisted if unlisted is not None else [])
    return sorted(found)


def _expand(directory: str, parts: list[str], found: set[str], seen: set[tuple[int, int]],
            unlisted: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if head == "**":
        try:
            st = os.stat(directory)
        except OSError:
            return
        if (st.st_dev, st.st_ino) in seen or len(seen) >= MAX_GLOB_DIRECTORIES:
            return  # walked already (a loop, or two links to one directory)
        seen.add((st.st_dev, st.st_ino))
        if rest:
            _expand(directory, rest, found, seen, unlisted)  # "**" matching no directory at all
        for name, is_dir in _listing(directory, unlisted, hidden=False):
            if not rest:
                found.add(_join(directory, name))  # a trailing "**" matches everything below
            if is_dir:
                _expand(_join(directory, name), parts, found, seen, unlisted)
        return
    if not has_magic(head):
        path = _join(directory, head)
        if not rest:
            if os.path.lexists(path):
                found.add(path)
        elif os.path.isdir(path):
            _expand(path, rest, found, seen, unlisted)
        return
    rx = glob_to_regex(head)
    for name, is_dir in _listing(directory, unlisted, hidden=head.startswith(".")):
        if not rx.match(name):
            continue
        if not rest:
            found.add(_join(directory, name))
        elif is_dir:
            _expand(_join(directory, name), rest, found, seen, unlisted)


def _listing(directory: str, unlisted: list[str], *, hidden: bool) -> list[tuple[str, bool]]:
    try:
        with os.scandir(directory) as it:
            return [(e.name, _is_dir(e)) for e in it if hidden or not e.name.startswith(".")]
    except OSError as exc:
        if out_of_resources(exc):
            unlisted.append(directory)
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows a symlink, as glob does
    except OSError:
        return False


def _join(directory: str, name: str) -> str:
    if directory == ".":
        return name
    return f"{directory}/{name}" if directory != "/" else f"/{name}"


class PathFilter:
    """The source's ``paths`` and ``exclude_paths``. Immutable once built: safe to read from any thread
    (the inotify handler filters events with it)."""

    def __init__(self, paths: list[str], exclude_paths: list[str]) -> None:
        self.patterns = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        self._include = [glob_to_regex(p) for p in self.patterns]
        self._exclude: list[tuple[bool, re.Pattern[str]]] = []
        for pattern in exclude_paths:
            if "/" in pattern:
                self._exclude.append((False, glob_to_regex(os.path.abspath(pattern))))
            else:
                self._exclude.append((True, glob_to_regex(pattern)))

    def included(self, path: str) -> bool:
        return any(rx.match(path) for rx in self._include) and not self.excluded(path)

    def excluded(self, path: str) -> bool:
        for by_name, rx in self._exclude:
            if rx.match(os.path.basename(path) if by_name else path):
                return True
        return False

    def watch_specs(self, streams: Iterable[Stream]) -> set[WatchSpec]:
        """Directories to watch: the glob bases (or their nearest existing ancestor, to see them appear) and
        the directories of the streams' real paths (symlink targets), never single files."""
        wanted: set[WatchSpec] = set()
        for pattern in self.patterns:
            base, recursive = watch_base(pattern)
            if os.path.isdir(base):
                wanted.add((base, recursive))
            else:
                wanted.add((nearest_existing_dir(base), False))
        covered = {d for d, _ in wanted}
        for f in streams:
            d = os.path.dirname(f.real or f.path)
            if d not in covered and os.path.isdir(d):
                wanted.add((d, False))
                covered.add(d)
        return wanted


@dataclass(slots=True)
class ScanResult:
    matched: dict[Ident, tuple[str, FileStat | None]]
    """Files matching the globs, by identity. The stat is None for a file known unchanged in identity."""
    problems: dict[str, str] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    unlisted: list[str] = field(default_factory=list)
    """Directories that could not be listed for want of descriptors: what is in them is unknown."""

    @property
    def incomplete(self) -> bool:
        return bool(self.unlisted)


Listing = tuple[tuple[int, int], list[tuple[str, Ident]], list[str]]  # (dir ino, mtime), regular, recheck


class Scanner:
    def __init__(self, paths: PathFilter) -> None:
        self.paths = paths
        self._name_rx: dict[str, re.Pattern[str]] = {}
        self._dir_cache: dict[str, Listing] = {}

    def scan(self, mode: ScanMode, followed: Callable[[str], Stream | None]) -> ScanResult:
        """``followed(path)``: the stream followed at that path, if it is still the one indexed by identity."""
        result = ScanResult({})
        for pattern in self.paths.patterns:
            self._scan_pattern(pattern, mode, followed, result)
        return result

    def _scan_pattern(self, pattern: str, mode: ScanMode, followed: Callable[[str], Stream | None],
                      result: ScanResult) -> None:
        matched, problems, seen = result.matched, result.problems, result.seen
        base, _ = watch_base(pattern)
        if os.path.isdir(base) and not os.access(base, os.R_OK | os.X_OK):
            problems[base] = "permission denied (directory)"
        directory, name_pattern = os.path.split(pattern)
        listing: tuple[int, int] | None = None
        regular: list[tuple[str, Ident]] = []
        recheck: list[str] = []
        candidates: Iterable[tuple[str, os.DirEntry[str] | None]]
        if has_magic(directory) or "**" in name_pattern:
            before = len(result.unlisted)
            expanded = expand_glob(pattern, result.unlisted)
            for d in result.unlisted[before:]:
                problems[d] = "cannot list the directory: out of descriptors (retried)"
            candidates = [(p, None) for p in expanded]
        else:
            try:
                dst = os.stat(directory)
                listing = (dst.st_ino, dst.st_mtime_ns)
            except OSError:
                listing = None
            cached = self._dir_cache.get(pattern)
            if mode == "cached" and listing is not None and cached is not None and cached[0] == listing:
                for path, ident in cached[1]:
                    seen.add(path)
                    matched.setdefault(ident, (path, None))
                regular = list(cached[1])
                candidates = [(p, None) for p in cached[2]]
            else:
                candidates = self._list_dir(directory, name_pattern, result)
                listing = listing if has_magic(name_pattern) and not result.unlisted else None
        dir_dev = -1
        for path, entry in candidates:
            if self.paths.excluded(path):
                continue
            if entry is None or entry.is_symlink():
                recheck.append(path)  # a symlink's target can change without its directory changing
            if entry is not None and mode != "deep":
                f = followed(path)
                if f is not None and not entry.is_symlink() and entry.inode() == f.ino:
                    if dir_dev == -1:
                        dir_dev = os.stat(directory).st_dev
                    if dir_dev == f.dev:
                        seen.add(path)
                        matched.setdefault(f.ident, (path, None))
                        regular.append((path, f.ident))
                        continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                if os.path.islink(path):
                    problems[path] = f"dangling symlink -> {os.readlink(path)}"
                continue
            except OSError as exc:
                problems[path] = exc.strerror or str(exc)
                recheck.append(path)
                continue
            if not statmod.S_ISREG(st.st_mode):
                continue
            seen.add(path)
            small = FileStat(st)  # 4 fields instead of a full stat_result (~645 B -> ~207 B per file)
            matched.setdefault((small.st_dev, small.st_ino), (path, small))
            if entry is not None and not entry.is_symlink():
                regular.append((path, (small.st_dev, small.st_ino)))
        if listing is not None:
            self._dir_cache[pattern] = (listing, regular, list(dict.fromkeys(recheck)))
        else:
            self._dir_cache.pop(pattern, None)

    def _list_dir(self, directory: str, name_pattern: str, result: ScanResult
                  ) -> list[tuple[str, os.DirEntry[str] | None]]:
        """glob.glob for a pattern with wildcards in the last component only, keeping the dir entries."""
        if not has_magic(name_pattern):
            path = os.path.join(directory, name_pattern)
            return [(path, None)] if os.path.lexists(path) else []
        rx = self._name_rx.get(name_pattern)
        if rx is None:
            rx = self._name_rx[name_pattern] = glob_to_regex(name_pattern)
        hidden_ok = name_pattern.startswith(".")
        try:
            with os.scandir(directory) as it:
                entries = [
                    (f"{directory}/{e.name}", e)
                    for e in it
                    if (hidden_ok or not e.name.startswith(".")) and rx.match(e.name)
                ]
        except OSError as exc:
            if out_of_resources(exc):
                result.unlisted.append(directory)
                result.problems[directory] = f"cannot list the directory: {exc.strerror} (retried)"
            return []
        entries.sort(key=lambda pe: pe[0])
        return entries
