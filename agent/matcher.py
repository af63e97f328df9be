"""Multi-pattern line matcher: one fast prefilter pass per chunk, stdlib ``re`` for the real answer.

Rules are written in Python ``re`` syntax and downstream code needs real ``re.Match`` objects (groups feed
alert templates), so the results here are, by contract, exactly those of ``re.compile(p).search(line)`` for
every pattern and line. Running 20 patterns per line with ``re`` manages 0.05-0.2M lines/s (bench/); a log
burst needs an order of magnitude more. So a fast engine only *nominates* candidate (line, pattern) pairs
and ``re`` confirms them (see docs/matching.md and the "Matching speed" field notes):

* ``hyperscan``: all patterns in one block-mode database, scanning the whole newline-joined chunk once; each
  reported match end is mapped to the line that contains it.
* ``re2`` (when hyperscan is not usable, e.g. not x86-64): one alternation searched over the chunk, jumping
  to the next line after each hit; an RE2 ``Set`` then says which patterns to confirm on that line.
* ``re``: every pattern on every line.

Why a prefilter can never lose a match: engines are not fed the user's pattern text (PCRE/RE2 syntax and
semantics differ from Python's in many small ways: Unicode ``\\w``/``\\d``/``\\s``, case folding such as
``(?i)k`` matching KELVIN SIGN, ``\\Z``, ``$`` before a final newline...). The pattern is parsed with Python's
own parser and re-emitted as a *superset* in a tiny common dialect: every character class is spelled out as
explicit code point ranges computed from Python's own engine, anchors are rewritten for a newline-joined
chunk (lines never contain ``\\n``), and constructs the engines lack (lookaround, backreferences,
conditionals, atomic groups, word boundaries on non-ASCII input) are widened to something that matches at
least as much. Widening only costs an extra ``re`` check on some line, never a missed match.
Two translations are compiled: one for pure-ASCII chunks (exact ``\\b``/``\\B``, ASCII-only classes, byte
mode) and one for chunks with non-ASCII text (UTF-8 mode, word boundaries dropped).
Patterns whose translation could match the empty string (it would "match" every line) or that an engine
rejects even in hyperscan's PREFILTER mode are run with ``re`` on every line. ``describe()`` lists them.

Thread safety: ``scan()`` keeps all per-call state local; hyperscan scratch space is allocated per thread, so
calls from ``asyncio.to_thread`` workers (even concurrent ones) are safe. python-hyperscan releases the GIL
while ``hs_scan`` runs and re-takes it only for each match callback.
"""

from __future__ import annotations

import array
import functools
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agent.lazy import lazy_import
from agent.lines import LineChunk

try:  # optional fast engines: the agent must still work (slower) without them
    import hyperscan as _hs
except Exception as exc:  # pragma: no cover - depends on the platform (x86-64 only wheels)
    _hs = None
    _HS_MISSING = f"{type(exc).__name__}: {exc}"
else:
    _HS_MISSING = ""

try:  # the fallback engine: imported on first use, ~1.5 MiB an agent on hyperscan never needs
    _re2: Any = lazy_import("re2")
except ImportError as exc:  # pragma: no cover - depends on the platform
    _re2 = None
    _RE2_MISSING = f"{type(exc).__name__}: {exc}"
else:
    _RE2_MISSING = ""

try:  # Python's own regex parser/compiler: private, so any surprise degrades to plain `re`, never to errors
    import _sre
    from re import _compiler as _sre_compile
    from re import _constants as _c
    from re import _parser as _sre_parse
except Exception as exc:  # pragma: no cover - a future Python could move these
    _sre_parse = None
    _TRANSLATE_MISSING = f"{type(exc).__name__}: {exc}"
else:
    _TRANSLATE_MISSING = ""

__all__ = ["EngineName", "LineMatch", "MultiMatcher", "available_engines"]

EngineName = Literal["hyperscan", "re2", "re"]
LineMatch = tuple[int, int, re.Match[str]]  # (line index, pattern index, match)

_MAX_CP: Final = 0x10FFFF
_NL: Final = 0x0A
_SURROGATES: Final = ((0xD800, 0xDFFF),)
_ASCII_MAX: Final = 0x7F
# A character class needing more ranges than this (Unicode \w: ~730 ranges, \d: 62) is widened on its
# non-ASCII side to "any non-ASCII code point": keeps hyperscan compile time and database size small (exact
# Unicode \d added ~15 ms per use), costs precision only on non-ASCII chunks; re confirms.
_CLASS_RANGE_LIMIT: Final = 32
# Counted repetition is unrolled by the engines: RE2 rejects nested counts whose product exceeds 1000, and
# hyperscan compile time explodes (15 s for (?:[a-z]{1000}){50}). A repeat whose unrolled size would exceed
# this is widened to an open-ended repeat with a smaller minimum ({n,m} -> {k,}, k <= n): a superset.
_REPEAT_SIZE_LIMIT: Final = 256
_NEVER_ASCII: Final = r"\x{ff}"  # a code point / byte that never occurs in pure-ASCII input
_HIT_SHIFT: Final = 24  # hyperscan hits are packed as (end offset << _HIT_SHIFT) | pattern index
_RE2_MAX_MEM: Final = 64 << 20


@functools.cache
def _hyperscan_probe() -> str:
    """Compile and run a trivial database once: importable is not enough (a CPU without SSSE3 fails here)."""
    if _hs is None:
        return _HS_MISSING
    try:
        db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
        db.compile(expressions=[b"x"], ids=[0], elements=1, flags=[_hs.HS_FLAG_MULTILINE])
        hits: list[int] = []
        db.scan(b"axb", match_event_handler=_on_hs_match, context=hits, scratch=_hs.Scratch(db))
    except Exception as exc:  # pragma: no cover - depends on the CPU
        return f"{type(exc).__name__}: {exc}"
    return "" if hits else "hyperscan self-test found no match"  # pragma: no branch


def available_engines() -> list[EngineName]:
    """Engines usable in this process, fastest first (``re`` is always there)."""
    out: list[EngineName] = []
    if _hs is not None and _sre_parse is not None and not _hyperscan_probe():
        out.append("hyperscan")
    if _re2 is not None and _sre_parse is not None:
        out.append("re2")
    out.append("re")
    return out


# ------------------------------------------------------------------------------------ code point sets
# A set of code points is a sorted tuple of disjoint, non-adjacent inclusive ranges.
Ranges = tuple[tuple[int, int], ...]
_FULL: Final[Ranges] = ((0, _MAX_CP),)


def _norm(ranges: Iterable[tuple[int, int]]) -> Ranges:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def _complement(ranges: Ranges, lo: int = 0, hi: int = _MAX_CP) -> Ranges:
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


def _subtract(ranges: Ranges, remove: Ranges) -> Ranges:
    return _intersect(ranges, _complement(_norm(remove)))


def _intersect(a: Ranges, b: Ranges) -> Ranges:
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


def _from_points(points: Iterable[int]) -> Ranges:
    return _norm((p, p) for p in points)


class _Untranslatable(Exception):
    """The parse tree holds something the translator does not know: that pattern runs with plain re."""


class _CharsetOracle:
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
            cps = array.array("I", range(_MAX_CP + 1)).tobytes()
            self._universe = cps.decode("utf-32-le", "surrogatepass")
        return self._universe

    @staticmethod
    def _compile_atom(node: tuple[Any, Any], flags: int, repeat: bool) -> re.Pattern[str]:
        state = _sre_parse.State()
        state.flags = flags
        sub = _sre_parse.SubPattern(state, [node])
        if repeat:
            sub = _sre_parse.SubPattern(state, [(_c.MAX_REPEAT, (1, _c.MAXREPEAT, sub))])
        return _sre_compile.compile(sub, 0)

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
        if _CharsetOracle._case_points is None:
            with self._lock:
                if _CharsetOracle._case_points is None:
                    points: set[int] = set()
                    iscased, tolower = _sre.unicode_iscased, _sre.unicode_tolower
                    limit = 0x20000
                    high = self.universe()[limit:]
                    if not (high.lower() == high == high.upper()):  # pragma: no cover - future Unicode
                        limit = _MAX_CP + 1
                    for cp in range(limit):
                        if iscased(cp):
                            ch = chr(cp)
                            points.update((cp, tolower(cp)))
                            for variant in (ch.lower(), ch.upper(), ch.casefold()):
                                if len(variant) == 1:
                                    points.add(ord(variant))
                    ordered = sorted(points)
                    _CharsetOracle._case_ranges = _from_points(ordered)
                    _CharsetOracle._case_points = "".join(map(chr, ordered))
        return _CharsetOracle._case_points, _CharsetOracle._case_ranges

    def atom(self, node: tuple[Any, Any], flags: int) -> Ranges:
        """Code points matched by one LITERAL / NOT_LITERAL / ANY / IN node under ``flags``."""
        op, av = node
        if op is _c.ANY:
            return _FULL  # DOTALL only decides about "\n", which never occurs inside a line
        flags &= _c.SRE_FLAG_IGNORECASE | _c.SRE_FLAG_ASCII | _c.SRE_FLAG_UNICODE | _c.SRE_FLAG_LOCALE
        if flags & _c.SRE_FLAG_LOCALE:  # pragma: no cover - (?L) is rejected for str patterns
            raise _Untranslatable("LOCALE flag")
        base = self._case_sensitive(op, av, flags)
        if not flags & _c.SRE_FLAG_IGNORECASE:
            return base
        key = (op, repr(av), flags)
        got = self._atoms.get(key)
        if got is None:
            points, case_ranges = self.case_points()
            rx = self._compile_atom(node, flags, repeat=False)
            matched = _from_points(map(ord, rx.findall(points)))
            got = _norm(_subtract(base, case_ranges) + matched)
            self._atoms[key] = got
        return got

    def _case_sensitive(self, op: Any, av: Any, flags: int) -> Ranges:
        if op is _c.LITERAL:
            return ((av, av),)
        if op is _c.NOT_LITERAL:
            return _complement(((av, av),))
        if op is not _c.IN:
            raise _Untranslatable(f"unexpected atom {op}")
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
                raise _Untranslatable(f"unexpected set item {item_op}")
        ranges = _norm(parts)
        return _complement(ranges) if negate else ranges


# ------------------------------------------------------------------------------------------ translation
def _esc(cp: int) -> str:
    ch = chr(cp)
    return ch if ch.isascii() and ch.isalnum() else f"\\x{{{cp:x}}}"


def _class_text(ranges: Ranges, negate: bool) -> str:
    if not negate and len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _esc(ranges[0][0])
    body = "".join(_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}" for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


@dataclass(slots=True)
class _Piece:
    text: str
    width: int  # minimum number of characters the text matches
    anchor: bool = False  # a ^, $, \b or \B: zero-width but worth keeping for precision
    atom: bool = False  # one character or class: a quantifier applies to it without a group
    size: int = 0  # characters the engines unroll it to (bounded repeats multiply): compile cost guard


@dataclass(slots=True)
class _Translation:
    text: str | None  # None: cannot be prefiltered, run with re on every line (see reason)
    approx: list[str] = field(default_factory=list)  # why the prefilter is wider than the pattern
    reason: str = ""


class _Translator:
    """Re-emit one parsed Python pattern as a superset regex in the hyperscan/RE2 common subset.

    ``ascii_only`` selects the variant used for pure-ASCII chunks: classes restricted to ASCII and exact
    ASCII word boundaries. The other variant must be right for any UTF-8 text.
    """

    def __init__(self, oracle: _CharsetOracle, ascii_only: bool) -> None:
        self.oracle = oracle
        self.ascii_only = ascii_only
        self.approx: list[str] = []
        self.group_width: dict[int, int] = {}

    def _note(self, why: str) -> None:
        if why not in self.approx:
            self.approx.append(why)

    def translate(self, parsed: Any) -> _Translation:
        flags = parsed.state.flags
        try:
            nodes = list(parsed.data)
            pieces = [self.node(op, av, flags) for op, av in nodes]
            # A trailing part that can match nothing adds no constraint on which line matches: drop it. And
            # a trailing repeat needs only its minimum count: "code=(\d+)" -> "code=\d". Both mean one
            # hyperscan report per occurrence instead of one per extra character matched.
            while pieces and pieces[-1].width == 0 and not pieces[-1].anchor:
                pieces.pop()
                nodes.pop()
            if nodes:
                tail = self._minimal_tail(nodes[-1])
                if tail is not None:
                    pieces[-1] = self.node(*tail, flags)
        except _Untranslatable as exc:
            return _Translation(None, reason=f"not translatable: {exc}")
        except RecursionError:
            return _Translation(None, reason="not translatable: nested too deeply")
        except Exception as exc:  # private re internals changed shape: this pattern runs with plain re
            return _Translation(None, reason=f"not translatable: {type(exc).__name__}: {exc}")
        if sum(p.width for p in pieces) == 0:
            return _Translation(None, list(self.approx), "can match the empty string (matches every line)")
        return _Translation("".join(p.text for p in pieces), list(self.approx))

    @classmethod
    def _minimal_tail(cls, node: tuple[Any, Any]) -> tuple[Any, Any] | None:
        """The last node with its (possibly nested) trailing repeat cut to its minimum count, or None."""
        op, av = node
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT) and av[0] != av[1]:
            return (op, (av[0], av[0], av[2]))
        if op is _c.SUBPATTERN and len(av[3]):
            inner = cls._minimal_tail(av[3][-1])
            if inner is not None:
                return (op, (av[0], av[1], av[2], [*list(av[3])[:-1], inner]))
        return None

    def seq(self, nodes: Iterable[tuple[Any, Any]], flags: int) -> _Piece:
        pieces = [self.node(op, av, flags) for op, av in nodes]
        if len(pieces) == 1:
            return pieces[0]
        return _Piece("".join(p.text for p in pieces), sum(p.width for p in pieces), size=sum(p.size for p in pieces))

    def charset(self, op: Any, av: Any, flags: int) -> _Piece:
        ranges = self.oracle.atom((op, av), flags)
        if self.ascii_only:
            ranges = _subtract(_intersect(ranges, ((0, _ASCII_MAX),)), ((_NL, _NL),))
            if not ranges:
                return _Piece(_NEVER_ASCII, 1, atom=True, size=1)
            neg = _complement(ranges, 0, _ASCII_MAX)
            text = _class_text(*((ranges, False) if len(ranges) <= len(neg) else (neg, True)))
            return _Piece(text, 1, atom=True, size=1)
        ranges = _subtract(ranges, ((_NL, _NL), *_SURROGATES))
        if not ranges:
            # Only "\n" or lone surrogates, which never occur inside a valid line: "\n" is a harmless
            # superset (it can only match a line separator; re rejects whatever that nominates).
            return _Piece(r"\x{a}", 1, atom=True, size=1)
        # A class reaching beyond ASCII becomes a multi-byte UTF-8 automaton: count it as 4 for the
        # repeat-size guard.
        size = 4 if ranges[-1][1] > _ASCII_MAX else 1
        neg = _subtract(_complement(ranges), _SURROGATES)
        if min(len(ranges), len(neg)) > _CLASS_RANGE_LIMIT:
            self._note("large Unicode class widened to any non-ASCII character")
            ascii_part = _intersect(ranges, ((0, _ASCII_MAX),))
            ranges = _norm((*ascii_part, (_ASCII_MAX + 1, 0xD7FF), (0xE000, _MAX_CP)))
            return _Piece(_class_text(ranges, False), 1, atom=True, size=size)
        text = _class_text(*((ranges, False) if len(ranges) <= len(neg) else (neg, True)))
        return _Piece(text, 1, atom=True, size=size)

    def node(self, op: Any, av: Any, flags: int) -> _Piece:
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
            return self.charset(op, av, flags)
        if op is _c.AT:
            if av in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING, _c.AT_BEGINNING_LINE):
                return _Piece("^", 0, anchor=True)  # the engines run in multi-line mode: start of a line
            if av in (_c.AT_END, _c.AT_END_STRING, _c.AT_END_LINE):
                return _Piece("$", 0, anchor=True)  # lines have no "\n", so Python's $ is the line end
            if av in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY):
                # ASCII input: Python's Unicode \b agrees with the engines' ASCII \b. (?a) patterns: also on
                # any input (non-ASCII is non-word for both). Otherwise drop it (a superset).
                if self.ascii_only or flags & _c.SRE_FLAG_ASCII:
                    return _Piece(r"\b" if av is _c.AT_BOUNDARY else r"\B", 0, anchor=True)
                self._note("word boundary ignored for non-ASCII input")
                return _Piece("", 0)
            raise _Untranslatable(f"unexpected anchor {av}")
        if op is _c.SUBPATTERN:
            group, add, remove, sub = av
            inner = self.seq(sub, (flags | add) & ~remove)
            if group is not None:
                self.group_width[group] = inner.width
            return inner if inner.atom else _Piece(f"(?:{inner.text})", inner.width, size=inner.size)
        if op is _c.BRANCH:
            return self.branch([self.seq(b, flags) for b in av[1]])
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            lo, hi, sub = av
            if op is _c.POSSESSIVE_REPEAT:
                self._note("possessive repeat treated as greedy")
            item = self.seq(sub, flags)
            if not item.text:
                return _Piece("", 0)
            unbounded = hi == _c.MAXREPEAT
            unit = max(item.size, 1)
            if unit * (lo + 1 if unbounded else hi) > _REPEAT_SIZE_LIMIT:
                lo, unbounded = max(0, min(lo, _REPEAT_SIZE_LIMIT // unit - 1)), True
                self._note("large repeat count widened")
            if unbounded:
                quant = {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
            elif lo == hi:
                quant = "" if lo == 1 else f"{{{lo}}}"
            else:
                quant = "?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}"
            if lo == 0 and not unbounded and hi == 0:
                return _Piece("", 0)
            body = item.text if item.atom else f"(?:{item.text})"
            return _Piece(body + quant, lo * item.width, size=unit * (lo + 1 if unbounded else hi))
        if op is _c.ATOMIC_GROUP:
            self._note("atomic group treated as a plain group")
            inner = self.seq(av, flags)
            return _Piece(f"(?:{inner.text})", inner.width, size=inner.size)
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            self._note("lookaround ignored by the prefilter")
            return _Piece("", 0)
        if op is _c.GROUPREF:
            # The same text as the group captured: at least as long as the group's shortest match (capped:
            # a long counted run of "any character" is costly to compile and adds little selectivity).
            self._note("backreference widened to any text")
            width = min(self.group_width.get(av, 0), 8)
            return _Piece(r"[^\x{a}]" + ("*" if width == 0 else f"{{{width},}}"), width, size=4 * (width + 1))
        if op is _c.GROUPREF_EXISTS:
            self._note("conditional group widened to either branch")
            _group, yes, no = av
            return self.branch([self.seq(yes, flags), self.seq(no or [], flags)])
        raise _Untranslatable(f"unexpected operator {op}")

    @staticmethod
    def branch(branches: list[_Piece]) -> _Piece:
        return _Piece(
            "(?:" + "|".join(b.text for b in branches) + ")",
            min(b.width for b in branches),
            size=sum(b.size for b in branches),
        )


# --------------------------------------------------------------------------------------------- matcher
@dataclass(slots=True)
class _Variant:
    """Engine program for one input kind (pure ASCII or any UTF-8) plus what it leaves to plain re."""

    program: Any = None  # hyperscan.Database or a compiled re2 alternation; None when nothing to scan
    covered: tuple[int, ...] = ()  # pattern indexes the program nominates candidates for
    line_set: Any = None  # re2: a Set of the same expressions, to tell which ones match a hit line
    always: tuple[int, ...] = ()  # pattern indexes re must run on every line
    reasons: dict[int, str] = field(default_factory=dict)  # why an index is in `always`
    approx: dict[int, list[str]] = field(default_factory=dict)  # why a covered index is widened


def _on_hs_match(pattern: int, _start: int, end: int, _flags: int, sink: list[int]) -> None:
    """hyperscan match callback: kept to one append (it runs once per match end, with the GIL re-taken)."""
    sink.append((end << _HIT_SHIFT) | pattern)


class MultiMatcher:
    """Find which of many Python-syntax patterns match which lines of a chunk, fast.

    ``scan(lines)`` returns ``(line index, pattern index, re.Match)`` for every pair where
    ``re.compile(pattern).search(line)`` matches, ordered by line then pattern: identical to the naive loop,
    whatever engine runs underneath (``engine``).
    """

    engine: EngineName

    def __init__(self, patterns: Sequence[str], *, engine: EngineName | Literal["auto"] = "auto") -> None:
        """Compile ``patterns``; raise ``re.error`` naming the first invalid one.

        ``engine="auto"`` picks the fastest available engine (hyperscan, then re2, then re) and degrades if
        one fails to build; naming an engine forces it (tests, benchmarks) and raises ``RuntimeError`` when
        it is unavailable.
        """
        self.patterns: tuple[str, ...] = tuple(patterns)
        compiled: list[re.Pattern[str]] = []
        for i, pattern in enumerate(self.patterns):
            if not isinstance(pattern, str):
                raise TypeError(f"pattern #{i} must be str, not {type(pattern).__name__}")
            try:
                compiled.append(re.compile(pattern))
            except re.error as exc:
                raise re.error(f"pattern #{i} {pattern!r}: {exc.msg}", exc.pattern, exc.pos) from exc
        self.compiled: tuple[re.Pattern[str], ...] = tuple(compiled)
        self._search: tuple[Callable[[str], re.Match[str] | None], ...] = tuple(c.search for c in compiled)
        self._tls = threading.local()
        self._unavailable: dict[str, str] = {}
        self._ascii = self._uni = _Variant()

        order: list[EngineName] = ["hyperscan", "re2", "re"] if engine == "auto" else [engine]
        for name in order:
            missing = self._missing(name)
            if missing:
                self._unavailable[name] = missing
                if engine != "auto":
                    raise RuntimeError(f"matcher engine {name!r} is not available: {missing}")
                continue
            try:
                self._build(name)
            except Exception as exc:
                if engine != "auto":
                    raise RuntimeError(f"matcher engine {name!r} failed to build: {exc}") from exc
                self._unavailable[name] = f"build failed: {type(exc).__name__}: {exc}"
                continue
            self.engine = name
            break

    # ------------------------------------------------------------------------------------- building
    @staticmethod
    def _missing(name: str) -> str:
        if name == "hyperscan":
            if _hs is None or _sre_parse is None:
                return _HS_MISSING or _TRANSLATE_MISSING
            return _hyperscan_probe()
        if name == "re2":
            return _RE2_MISSING or _TRANSLATE_MISSING if _re2 is None or _sre_parse is None else ""
        if name == "re":
            return ""
        raise ValueError(f"unknown matcher engine {name!r} (expected hyperscan, re2, re or auto)")

    def _build(self, name: EngineName) -> None:
        everything = tuple(range(len(self.patterns)))
        if name == "re" or not self.patterns:
            self._ascii = self._uni = _Variant(always=everything if name == "re" else ())
            return
        oracle = _CharsetOracle()
        translations: dict[bool, list[_Translation]] = {True: [], False: []}
        for pattern in self.patterns:
            try:
                parsed = _sre_parse.parse(pattern, 0)
            except Exception as exc:  # pragma: no cover - re.compile accepted it just above
                bad = _Translation(None, reason=f"not translatable: {exc}")
                translations[True].append(bad)
                translations[False].append(bad)
                continue
            for ascii_only in (True, False):
                translations[ascii_only].append(_Translator(oracle, ascii_only).translate(parsed))
        build = self._build_hyperscan if name == "hyperscan" else self._build_re2
        self._ascii = build(translations[True], ascii_only=True)
        self._uni = build(translations[False], ascii_only=False)

    @staticmethod
    def _split(translations: list[_Translation]) -> tuple[dict[int, str], _Variant]:
        exprs: dict[int, str] = {}
        variant = _Variant()
        always: list[int] = []
        for i, t in enumerate(translations):
            if t.text is None:
                always.append(i)
                variant.reasons[i] = t.reason
            else:
                exprs[i] = t.text
                if t.approx:
                    variant.approx[i] = list(t.approx)
        variant.always = tuple(always)
        return exprs, variant

    def _build_hyperscan(self, translations: list[_Translation], *, ascii_only: bool) -> _Variant:
        assert _hs is not None
        exprs, variant = self._split(translations)
        base = _hs.HS_FLAG_MULTILINE | (0 if ascii_only else _hs.HS_FLAG_UTF8)
        flags = dict.fromkeys(exprs, base)

        def compile_db(ids: list[int]) -> Any:
            db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
            db.compile(
                expressions=[exprs[i].encode("ascii") for i in ids],
                ids=ids,
                elements=len(ids),
                flags=[flags[i] for i in ids],
            )
            return db

        ids = sorted(exprs)
        if not ids:
            return variant
        try:
            variant.program = compile_db(ids)
        except _hs.error:
            # Find the culprits one by one (the combined error does not say which); retry each in
            # PREFILTER mode (hyperscan widens what it cannot do exactly), else leave it to re.
            kept: list[int] = []
            never: list[int] = []
            for i in ids:
                for extra in (0, _hs.HS_FLAG_PREFILTER):
                    flags[i] = base | extra
                    try:
                        compile_db([i])
                    except _hs.error as exc:
                        if "never match" in str(exc):
                            # hyperscan proved the superset cannot match this kind of input, so the
                            # pattern cannot either (e.g. a\ba on ASCII): nothing to nominate, nor to run.
                            never.append(i)
                            variant.approx.setdefault(i, []).append("can never match this input kind")
                            break
                        variant.reasons[i] = f"hyperscan rejected it: {exc}"
                        continue
                    if extra:
                        variant.approx.setdefault(i, []).append("hyperscan PREFILTER mode")
                    variant.reasons.pop(i, None)
                    kept.append(i)
                    break
            rejected = [i for i in ids if i not in kept and i not in never]
            variant.always = tuple(sorted((*variant.always, *rejected)))
            ids = kept
            variant.program = compile_db(ids) if ids else None
        variant.covered = tuple(ids)
        return variant

    def _build_re2(self, translations: list[_Translation], *, ascii_only: bool) -> _Variant:
        assert _re2 is not None
        exprs, variant = self._split(translations)
        options = _re2.Options()
        options.max_mem = _RE2_MAX_MEM
        options.never_capture = True
        options.log_errors = False  # rejections are reported by describe(), not printed to stderr

        def compile_alternation(ids: list[int]) -> Any:
            return _re2.compile("(?m)" + "|".join(f"(?:{exprs[i]})" for i in ids), options)

        ids = sorted(exprs)
        if not ids:
            return variant
        try:
            variant.program = compile_alternation(ids)
        except _re2.error:
            kept = []
            for i in ids:
                try:
                    compile_alternation([i])
                except _re2.error as exc:
                    variant.reasons[i] = f"re2 rejected it: {exc}"
                else:
                    kept.append(i)
            variant.always = tuple(sorted((*variant.always, *(i for i in ids if i not in kept))))
            ids = kept
            variant.program = compile_alternation(ids) if ids else None
        variant.covered = tuple(ids)
        if ids:
            # The alternation finds hit lines fast but names only one alternative per hit; the Set names
            # every expression matching that line, so re confirms only those (matters for frequent rules).
            line_set = _re2.Set.SearchSet(options)
            try:
                for i in ids:
                    line_set.Add(exprs[i])
                line_set.Compile()
            except _re2.error:
                line_set = None  # then every covered pattern is confirmed on each hit line
            variant.line_set = line_set
        return variant

    # ----------------------------------------------------------------------------------- reporting
    def describe(self) -> dict[str, Any]:
        """Engine in use and which patterns it cannot fully accelerate (for /status and check-config).

        ``fallback``: patterns run with plain ``re`` on every line (slow path), with the reason and the input
        kind it applies to ("ascii" chunks, "non-ascii" chunks); empty for the ``re`` engine, where that is
        every pattern. ``widened``: patterns the fast engine over-approximates; ``re`` confirms each candidate,
        so results stay exact, only a little more work is done. ``unavailable``: faster engines skipped, why.
        """
        fallback: list[dict[str, Any]] = []
        widened: list[dict[str, Any]] = []
        for i, pattern in enumerate(self.patterns if self.engine != "re" else ()):
            on = [kind for kind, v in (("ascii", self._ascii), ("non-ascii", self._uni)) if i in v.always]
            if on:
                reason = self._uni.reasons.get(i) or self._ascii.reasons.get(i) or "unknown"
                fallback.append({"index": i, "pattern": pattern, "input": on, "reason": reason})
                continue
            why = list(dict.fromkeys([*self._ascii.approx.get(i, []), *self._uni.approx.get(i, [])]))
            if why:
                widened.append({"index": i, "pattern": pattern, "reason": "; ".join(why)})
        return {
            "engine": self.engine,
            "patterns": len(self.patterns),
            "fallback": fallback,
            "widened": widened,
            "unavailable": dict(self._unavailable),
        }

    def __repr__(self) -> str:
        return f"<MultiMatcher engine={self.engine} patterns={len(self.patterns)}>"

    # ------------------------------------------------------------------------------------- scanning
    def scan(self, lines: Sequence[str], data: bytes | None = None) -> list[LineMatch]:
        """(line index, pattern index, match) for every (line, pattern) where ``search`` matches.

        ``data``, when the caller already has it (the tailer's raw chunk), must be the lines' UTF-8 bytes
        joined by ``b"\\n"``: it saves re-encoding. It is checked cheaply (newline count, UTF-8 validity when
        not ASCII) and rebuilt if it does not fit, so a wrong ``data`` costs time, not results.
        """
        n_lines = len(lines)
        if not n_lines or not self.patterns:
            return []
        if self.engine == "re":
            return self._scan_re(lines)
        n_pat = len(self.patterns)
        special: list[int] = []
        chunk = self._encode(lines, data)
        keys: set[int] = set()
        variant = self._ascii
        if chunk is not None:
            variant = self._ascii if chunk.isascii() else self._uni
            # The newline count comes out of the candidate pass (no separate pass over the chunk); a
            # mismatch means some line holds "\n" (journald records can) or `data` did not fit the lines.
            if self._candidate_keys(variant, chunk, n_pat, keys) != n_lines - 1:
                chunk = None
        if chunk is None:
            keys.clear()
            chunk, special = self._encode_per_line(lines)
            variant = self._ascii if chunk.isascii() else self._uni
            self._candidate_keys(variant, chunk, n_pat, keys)
        for j in variant.always:
            keys.update(range(j, n_lines * n_pat, n_pat))
        for i in special:  # lines the fast engine could not see faithfully: every pattern, plain re
            keys.update(range(i * n_pat, (i + 1) * n_pat))
        search = self._search
        out: list[LineMatch] = []
        append = out.append
        for key in sorted(keys):
            i, j = divmod(key, n_pat)
            m = search[j](lines[i])
            if m is not None:
                append((i, j, m))
        return out

    def scan_chunk(self, chunk: LineChunk) -> list[tuple[int, re.Match[str]]]:
        """(pattern index, match) for every (line, pattern) where ``search`` matches, in line order.

        Same answer as :meth:`scan` on the chunk's lines, but only the lines the fast engine nominates are
        ever decoded; each match's ``.string`` is its line. A pattern ``re`` must run on every line (see
        :meth:`describe`) takes the whole chunk back to the per-line path.
        """
        data = chunk.data
        if not self.patterns:
            return []
        variant = self._ascii if chunk.ascii else self._uni
        if self.engine == "re" or variant.always or variant.program is None:
            lines = list(chunk)
            return [(j, m) for _, j, m in self.scan(lines, data)]
        search = self._search
        out: list[tuple[int, re.Match[str]]] = []
        for start, end, patterns in self._candidate_lines(variant, data):
            line = data[start:end].decode("utf-8")
            for j in sorted(set(patterns)):
                m = search[j](line)
                if m is not None:
                    out.append((j, m))
        return out

    def _scan_re(self, lines: Sequence[str]) -> list[LineMatch]:
        out: list[LineMatch] = []
        searches = tuple(enumerate(self._search))
        for i, line in enumerate(lines):
            for j, search in searches:
                m = search(line)
                if m is not None:
                    out.append((i, j, m))
        return out

    @staticmethod
    def _encode(lines: Sequence[str], data: bytes | None) -> bytes | None:
        """The chunk as valid UTF-8 (the engines' UTF-8 mode is undefined on anything else), or None."""
        if data is not None:
            if data.isascii():
                return data
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                pass  # e.g. encoded with surrogatepass: rebuild it from the lines
            else:
                return data
        try:
            return "\n".join(lines).encode("utf-8")
        except UnicodeEncodeError:
            return None

    @staticmethod
    def _encode_per_line(lines: Sequence[str]) -> tuple[bytes, list[int]]:
        """Chunk with exactly one ``\\n`` between lines, plus the lines the engines must not be trusted on.

        A line containing ``\\n`` or a lone surrogate (not encodable as UTF-8) becomes an empty line in the
        chunk and is checked with plain ``re`` instead.
        """
        parts: list[bytes] = []
        special: list[int] = []
        for i, line in enumerate(lines):
            if "\n" not in line:
                try:
                    parts.append(line.encode("utf-8"))
                    continue
                except UnicodeEncodeError:
                    pass
            parts.append(b"")
            special.append(i)
        return b"\n".join(parts), special

    def _candidate_keys(self, variant: _Variant, chunk: bytes, n_pat: int, keys: set[int]) -> int:
        """Add ``line * n_pat + pattern`` keys the fast engine nominates; return the chunk's newline count."""
        count = chunk.count
        line = pos = 0
        if variant.program is not None:
            for start, _end, patterns in self._candidate_lines(variant, chunk):
                line += count(b"\n", pos, start)
                pos = start
                base = line * n_pat
                keys.update(base + j for j in patterns)
        return line + count(b"\n", pos)

    def _candidate_lines(self, variant: _Variant, chunk: bytes) -> list[tuple[int, int, list[int]]]:
        """(start, end, pattern indexes) of every line the fast engine nominates, in order; ``chunk[start:end]``
        is the line. No newline counting: the chunk path never needs line numbers."""
        if self.engine == "hyperscan":
            return self._hyperscan_lines(variant, chunk)
        return self._re2_lines(variant, chunk)

    def _scratch(self, variant: _Variant) -> Any:
        """Per-thread hyperscan scratch (a scratch must never be used by two scans at once)."""
        key = "ascii" if variant is self._ascii else "uni"
        scratch = getattr(self._tls, key, None)
        if scratch is None:
            scratch = _hs.Scratch(variant.program)
            setattr(self._tls, key, scratch)
        return scratch

    def _hyperscan_lines(self, variant: _Variant, chunk: bytes) -> list[tuple[int, int, list[int]]]:
        hits: list[int] = []
        variant.program.scan(chunk, match_event_handler=_on_hs_match, context=hits, scratch=self._scratch(variant))
        if not hits:
            return []
        hits.sort()
        mask = (1 << _HIT_SHIFT) - 1
        find, rfind = chunk.find, chunk.rfind
        out: list[tuple[int, int, list[int]]] = []
        line_end = -1
        patterns: list[int] = []
        for hit in hits:
            end = hit >> _HIT_SHIFT
            if end > line_end:
                # Matches are never empty and line text holds no "\n": a match belongs to the line holding
                # offset end - 1.
                line_end = find(b"\n", end)
                if line_end < 0:
                    line_end = len(chunk)
                patterns = []
                out.append((rfind(b"\n", 0, end) + 1, line_end, patterns))
            patterns.append(hit & mask)
        return out

    def _re2_lines(self, variant: _Variant, chunk: bytes) -> list[tuple[int, int, list[int]]]:
        # The alternation only reports the leftmost alternative per position, so a hit says "this line is
        # worth checking", not which patterns match: the Set (or, failing that, every covered pattern)
        # says which ones to confirm with re. Then the search resumes at the next line.
        search = variant.program.search
        covered = variant.covered
        line_match = variant.line_set.Match if variant.line_set is not None else None
        find, rfind = chunk.find, chunk.rfind
        out: list[tuple[int, int, list[int]]] = []
        pos = 0
        while True:
            m = search(chunk, pos)
            if m is None:
                return out
            start = m.start()
            line_start = rfind(b"\n", 0, start) + 1
            nl = find(b"\n", start)
            line_end = nl if nl >= 0 else len(chunk)
            if line_match is None:
                out.append((line_start, line_end, list(covered)))
            else:
                found = line_match(chunk[line_start:line_end]) or ()
                if found:
                    out.append((line_start, line_end, [covered[k] for k in found]))
            if nl < 0:
                return out
            pos = nl + 1
