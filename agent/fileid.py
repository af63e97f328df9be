"""File identity and glob helpers for the file source (`agent/tail.py`).

Kept apart from the tailer's state machine because these are pure, easily tested functions: how a file is
fingerprinted, how a glob becomes a regex (for exclusions and for filtering inotify events cheaply on the
watchdog thread), and which directory a glob needs watched.
"""

from __future__ import annotations

import hashlib
import os
import re

_MAGIC = re.compile(r"[*?\[]")


def fingerprint(head: bytes) -> str:
    """A short hash of a file's first bytes.

    Stored in checkpoints instead of the bytes themselves so the state stays small; 64 bits is plenty to tell
    apart the handful of files that share a (device, inode) pair over time.
    """
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def pread_exact(fd: int, length: int, offset: int) -> bytes:
    """Read up to ``length`` bytes at ``offset``, looping over short reads (some filesystems do them)."""
    if length <= 0 or offset < 0:
        return b""
    parts: list[bytes] = []
    got = 0
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def has_magic(pattern: str) -> bool:
    """True when the pattern contains glob wildcards."""
    return _MAGIC.search(pattern) is not None


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob with shell semantics: ``*`` and ``?`` stay in one path component, ``**`` crosses them.

    :mod:`fnmatch` lets ``*`` match ``/``, which would make ``/var/log/*.log`` also exclude files in
    sub-directories; users expect the same meaning as in ``paths``.
    """
    i, n = 0, len(pattern)
    out: list[str] = []
    while i < n:
        c = pattern[i]
        if c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                # "**/" matches zero or more directories; a bare "**" matches anything.
                if i + 2 < n and pattern[i + 2] == "/":
                    out.append("(?:.*/)?")
                    i += 3
                    continue
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def watch_base(pattern: str) -> tuple[str, bool]:
    """The directory inotify must watch for an absolute glob, and whether recursively.

    The base is the longest leading run of components without wildcards. When the rest has a ``/`` (e.g.
    ``/var/log/*/app.log`` or ``**``), files can appear in sub-directories, so the watch is recursive.
    """
    parts = pattern.split("/")
    base: list[str] = []
    for idx, part in enumerate(parts[:-1]):
        if has_magic(part):
            return ("/".join(base) or "/", True) if idx else ("/", True)
        base.append(part)
    return "/".join(base) or "/", False


def nearest_existing_dir(path: str) -> str:
    """The closest ancestor of ``path`` (or itself) that is an existing directory.

    Used to watch for the creation of a log directory that does not exist yet, so its files are found
    within the inotify latency rather than at the next full rescan.
    """
    current = path
    while True:
        if os.path.isdir(current):
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return current
        current = parent
