"""Sets of code points: the range algebra, and the oracle that asks Python's engine what a class matches.

A character class reaches the fast engines as explicit code point ranges (see ``translate``), never as
``\\w``, ``\\d``, ``\\s`` or a case-insensitive letter: those mean something slightly different in every
engine, and only Python's meaning decides whether a rule matches. A set of code points is a sorted tuple of
disjoint, non-adjacent inclusive ranges (``Ranges``); the functions below keep it in that shape.
"""

from __future__ import annotations

import array
import re
import threading
from collections.abc import Iterable
from typing import Any, Final

from agent.match import sre
from agent.match.sre import Untranslatable
from agent.match.sre import constants as _c

MAX_CP: Final = 0x10FFFF
NL: Final = 0x0A
SURROGATES: Final = ((0xD800, 0xDFFF),)
ASCII_MAX: Final = 0x7F

Ranges = tuple[tuple[int, int], ...]
FULL: Final[Ranges] = ((0, MAX_CP),)


def norm(ranges: Iterable[tuple[int, int]]) -> Ranges:
    """Sort and merge overlapping or adjacent ranges."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def complement(ranges: Ranges, lo: int = 0, hi: int = MAX_CP) -> Ranges:
    """The code points of ``lo..hi`` not in ``ranges``."""
    out: list[tuple[int, int]] = []
    nxt = lo
    for a, b in ranges:
        if b < lo or a > hi:
            continue
        if a > nxt:
            out.append((nxt, a - 1))
        nxt = max(nxt, b + 1)
    if nxt <= hi:
        out.append((nxt, hi))
    return tuple(out)


def subtract(ranges: Ranges, remove: Ranges) -> Ranges:
    """``ranges`` without ``remove`` (which need not be normalised)."""
    return intersect(ranges, complement(norm(remove)))


def intersect(a: Ranges, b: Ranges) -> Ranges:
    """Code points in both ``a`` and ``b``."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def from_points(points: Iterable[int]) -> Ranges:
    """The set holding exactly ``points``."""
    return norm((p, p) for p in points)


class CharsetOracle:
    """Exact sets of code points a single-character Python regex atom matches, computed by Python's engine.

    Why not hard-code the rules: Python's notion of \\w, \\d, \\s and of case-insensitive equality follows its
    own Unicode database and special cases (KELVIN SIGN, dotless i, long s, ...), which differ from PCRE's,
    RE2's and hyperscan's. Asking ``_sre`` itself is the only way to be exact on every Python version.
    Results are cached process-wide. The first build in a process that uses \\w/\\d/\\s or IGNORECASE pays
    ~0.1-0.3 s for them (scanning the 1.1M-code-point universe string, which is dropped afterwards).
    """

    _lock = threading.Lock()
    _categories: dict[tuple[Any, int], Ranges] = {}
    _case_points: str | None = None
    _case_ranges: Ranges = ()
    _atoms: dict[tuple[Any, str, int], Ranges] = {}

    def __init__(self) -> None:
        self._universe: str | None = None

    def universe(self) -> str:
        """Every code point, in order, so that a match's index is its code point."""
        if self._universe is None:
            cps = array.array("I", range(MAX_CP + 1)).tobytes()
            self._universe = cps.decode("utf-32-le", "surrogatepass")
        return self._universe

    @staticmethod
    def _compile_atom(node: tuple[Any, Any], flags: int, repeat: bool) -> re.Pattern[str]:
        state = sre.parser.State()
        state.flags = flags
        sub = sre.parser.SubPattern(state, [node])
        if repeat:
            sub = sre.parser.SubPattern(state, [(_c.MAX_REPEAT, (1, _c.MAXREPEAT, sub))])
        return sre.compiler.compile(sub, 0)

    def _scan_universe(self, node: tuple[Any, Any], flags: int) -> Ranges:
        rx = self._compile_atom(node, flags, repeat=True)
        return tuple((m.start(), m.end() - 1) for m in rx.finditer(self.universe()))

    def category(self, cat: Any, flags: int) -> Ranges:
        key = (cat, flags & (_c.SRE_FLAG_ASCII | _c.SRE_FLAG_UNICODE))
        got = self._categories.get(key)
        if got is None:
            got = self._scan_universe((_c.IN, [(_c.CATEGORY, cat)]), key[1])
            self._categories[key] = got
        return got

    def case_points(self) -> tuple[str, Ranges]:
        """Code points taking part in any case mapping (string for scanning, and as ranges).

        For any other code point, case-insensitive matching cannot differ from case-sensitive matching:
        sre's ignore-case opcodes only compare ``lower(ch)``/case variants, which are the code point itself.
        """
        if CharsetOracle._case_points is None:
            with self._lock:
                if CharsetOracle._case_points is None:
                    points: set[int] = set()
                    iscased, tolower = sre.core.unicode_iscased, sre.core.unicode_tolower
                    limit = 0x20000
                    high = self.universe()[limit:]
                    if not (high.lower() == high == high.upper()):  # pragma: no cover - future Unicode
                        limit = MAX_CP + 1
                    for cp in range(limit):
                        if iscased(cp):
                            ch = chr(cp)
                            points.update((cp, tolower(cp)))
                            for variant in (ch.lower(), ch.upper(), ch.casefold()):
                                if len(variant) == 1:
                                    points.add(ord(variant))
                    ordered = sorted(points)
                    CharsetOracle._case_ranges = from_points(ordered)
                    CharsetOracle._case_points = "".join(map(chr, ordered))
        return CharsetOracle._case_points, CharsetOracle._case_ranges

    def atom(self, node: tuple[Any, Any], flags: int) -> Ranges:
        """Code points matched by one LITERAL / NOT_LITERAL / ANY / IN node under ``flags``."""
        op, av = node
        if op is _c.ANY:
            return FULL  # DOTALL only decides about "\n", which never occurs inside a line
        flags &= _c.SRE_FLAG_IGNORECASE | _c.SRE_FLAG_ASCII | _c.SRE_FLAG_UNICODE | _c.SRE_FLAG_LOCALE
        if flags & _c.SRE_FLAG_LOCALE:  # pragma: no cover - (?L) is rejected for str patterns
            raise Untranslatable("LOCALE flag")
        base = self._case_sensitive(op, av, flags)
        if not flags & _c.SRE_FLAG_IGNORECASE:
            return base
        key = (op, repr(av), flags)
        got = self._atoms.get(key)
        if got is None:
            points, case_ranges = self.case_points()
            rx = self._compile_atom(node, flags, repeat=False)
            matched = from_points(map(ord, rx.findall(points)))
            got = norm(subtract(base, case_ranges) + matched)
            self._atoms[key] = got
        return got

    def _case_sensitive(self, op: Any, av: Any, flags: int) -> Ranges:
        if op is _c.LITERAL:
            return ((av, av),)
        if op is _c.NOT_LITERAL:
            return complement(((av, av),))
        if op is not _c.IN:
            raise Untranslatable(f"unexpected atom {op}")
        negate = False
        parts: list[tuple[int, int]] = []
        for item_op, item_av in av:
            if item_op is _c.NEGATE:
                negate = True
            elif item_op is _c.LITERAL:
                parts.append((item_av, item_av))
            elif item_op is _c.RANGE:
                parts.append((item_av[0], item_av[1]))
            elif item_op is _c.CATEGORY:
                parts.extend(self.category(item_av, flags))
            else:
                raise Untranslatable(f"unexpected set item {item_op}")
        ranges = norm(parts)
        return complement(ranges) if negate else ranges
