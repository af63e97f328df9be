"""What a source's globs mean: ``paths``/``exclude_paths`` as a filter any thread may ask, and a glob expanded
the way ``glob.glob(..., recursive=True)`` does but safe on a hostile tree (each directory walked once).

The scanner (``scan.py``) walks the same globs incrementally, directory by directory; rotation and sibling
searches, which look once, use :func:`expand_glob`.
"""

from __future__ import annotations

import os
import re

from agent.fileid import glob_to_regex, has_magic
from agent.tail.identity import out_of_resources

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
                found.add(join_path(directory, name))  # a trailing "**" matches everything below
            if is_dir:
                _expand(join_path(directory, name), parts, found, seen, unlisted)
        return
    if not has_magic(head):
        path = join_path(directory, head)
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
            found.add(join_path(directory, name))
        elif is_dir:
            _expand(join_path(directory, name), rest, found, seen, unlisted)


def _listing(directory: str, unlisted: list[str], *, hidden: bool) -> list[tuple[str, bool]]:
    try:
        with os.scandir(directory) as it:
            return [(e.name, is_dir(e)) for e in it if hidden or not e.name.startswith(".")]
    except OSError as exc:
        if out_of_resources(exc):
            unlisted.append(directory)
        return []


def is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows a symlink, as glob does
    except OSError:
        return False


def join_path(directory: str, name: str) -> str:
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
