"""logfmt (``key=value key2="quoted value" flag``), as Heroku, Go's go-kit/logfmt and slog's TextHandler write it.

Values with spaces are double-quoted with ``\\"`` and ``\\\\`` escapes (``\\n``, ``\\t``, ``\\r`` too); a bare key
means true; ``key=`` is the empty string. A line is a logfmt record when it is nothing but such pairs, at least
one of them with ``=``: a plain sentence is not taken for a row of bare keys, and an unterminated quote is a
parse error (the line is then the message as a whole).
"""

from __future__ import annotations

import re
from typing import Any

_PAIR = re.compile(r'[ \t]*([^\s="]+)(?:=(?:"((?:[^"\\]|\\.)*)"|([^\s"]*)))?(?=[ \t]|\Z)')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPE.sub(lambda m: _ESCAPES.get(m[1], m[1]), text)


def parse_logfmt(line: str) -> dict[str, Any] | None:
    """The pairs of a logfmt line (a later duplicate key wins, as in go-logfmt), or None when it is not one."""
    fields: dict[str, Any] = {}
    pos, end, pairs = 0, len(line.rstrip()), 0
    match = _PAIR.match
    while pos < end:
        m = match(line, pos)
        if m is None:
            return None
        key, quoted, bare = m.groups()
        if quoted is not None:
            fields[key], pairs = _unescape(quoted), pairs + 1
        elif bare is not None:
            fields[key], pairs = bare, pairs + 1
        else:
            fields[key] = True
        pos = m.end()
    return fields if pairs else None
