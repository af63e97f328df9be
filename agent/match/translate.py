"""Python ``re`` pattern -> a *superset* regex in the tiny dialect hyperscan and RE2 share.

Why a prefilter can never lose a match: engines are not fed the user's pattern text (PCRE/RE2 syntax and
semantics differ from Python's in many small ways: Unicode ``\\w``/``\\d``/``\\s``, case folding such as
``(?i)k`` matching KELVIN SIGN, ``\\Z``, ``$`` before a final newline...). The pattern is parsed with Python's
own parser and re-emitted as a superset in a tiny common dialect: every character class is spelled out as
explicit code point ranges computed from Python's own engine (``charsets``), anchors are rewritten for a
newline-joined chunk (lines never contain ``\\n``), and constructs the engines lack (lookaround,
backreferences, conditionals, atomic groups, word boundaries on non-ASCII input) are widened to something
that matches at least as much. Widening only costs an extra ``re`` check on some line, never a missed match.

Each pattern gets two translations: one for pure-ASCII chunks (exact ``\\b``/``\\B``, ASCII-only classes,
byte mode) and one for chunks with non-ASCII text (UTF-8 mode, word boundaries dropped). A pattern whose
translation could match the empty string (it would "match" every line), or whose parse tree holds
something unknown, gets no text: the matcher runs it with ``re`` on every line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agent.match import sre
from agent.match.charsets import (
    ASCII_MAX,
    MAX_CP,
    NL,
    SURROGATES,
    CharsetOracle,
    Ranges,
    complement,
    intersect,
    norm,
    subtract,
)
from agent.match.sre import Untranslatable
from agent.match.sre import constants as _c

# A character class needing more ranges than this (Unicode \w: ~730 ranges, \d: 62) is widened on its
# non-ASCII side to "any non-ASCII code point": keeps hyperscan compile time and database size small (exact
# Unicode \d added ~15 ms per use), costs precision only on non-ASCII chunks; re confirms.
_CLASS_RANGE_LIMIT: Final = 32
# Counted repetition is unrolled by the engines: RE2 rejects nested counts whose product exceeds 1000, and
# hyperscan compile time explodes (15 s for (?:[a-z]{1000}){50}). A repeat whose unrolled size would exceed
# this is widened to an open-ended repeat with a smaller minimum ({n,m} -> {k,}, k <= n): a superset.
_REPEAT_SIZE_LIMIT: Final = 256
_NEVER_ASCII: Final = r"\x{ff}"  # a code point / byte that never occurs in pure-ASCII input


def esc(cp: int) -> str:
    """One code point in the common dialect: ASCII letters and digits as themselves, the rest as ``\\x{..}``."""
    ch = chr(cp)
    return ch if ch.isascii() and ch.isalnum() else f"\\x{{{cp:x}}}"


def class_text(ranges: Ranges, negate: bool) -> str:
    """A character class matching ``ranges`` (or everything else, when ``negate``)."""
    if not negate and len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return esc(ranges[0][0])
    body = "".join(esc(lo) if lo == hi else f"{esc(lo)}-{esc(hi)}" for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


@dataclass(slots=True)
class Piece:
    """The translation of one parse-tree node (or a sequence of them)."""

    text: str
    width: int  # minimum number of characters the text matches
    anchor: bool = False  # a ^, $, \b or \B: zero-width but worth keeping for precision
    atom: bool = False  # one character or class: a quantifier applies to it without a group
    size: int = 0  # characters the engines unroll it to (bounded repeats multiply): compile cost guard


@dataclass(slots=True)
class Translation:
    """One pattern for one input kind: what the fast engine compiles, or why it cannot."""

    text: str | None  # None: cannot be prefiltered, run with re on every line (see reason)
    approx: list[str] = field(default_factory=list)  # why the prefilter is wider than the pattern
    reason: str = ""


def translate_patterns(patterns: Sequence[str]) -> dict[bool, list[Translation]]:
    """Both translations of every pattern, keyed by ``ascii_only`` (one oracle, so Unicode tables load once)."""
    oracle = CharsetOracle()
    translations: dict[bool, list[Translation]] = {True: [], False: []}
    for pattern in patterns:
        try:
            parsed = sre.parser.parse(pattern, 0)
        except Exception as exc:  # pragma: no cover - the matcher compiled it with re before
            bad = Translation(None, reason=f"not translatable: {exc}")
            translations[True].append(bad)
            translations[False].append(bad)
            continue
        for ascii_only in (True, False):
            translations[ascii_only].append(Translator(oracle, ascii_only).translate(parsed))
    return translations


class Translator:
    """Re-emit one parsed Python pattern as a superset regex in the hyperscan/RE2 common subset.

    ``ascii_only`` selects the variant used for pure-ASCII chunks: classes restricted to ASCII and exact
    ASCII word boundaries. The other variant must be right for any UTF-8 text.
    """

    def __init__(self, oracle: CharsetOracle, ascii_only: bool) -> None:
        self.oracle = oracle
        self.ascii_only = ascii_only
        self.approx: list[str] = []
        self.group_width: dict[int, int] = {}

    def _note(self, why: str) -> None:
        if why not in self.approx:
            self.approx.append(why)

    def translate(self, parsed: Any) -> Translation:
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
        except Untranslatable as exc:
            return Translation(None, reason=f"not translatable: {exc}")
        except RecursionError:
            return Translation(None, reason="not translatable: nested too deeply")
        except Exception as exc:  # private re internals changed shape: this pattern runs with plain re
            return Translation(None, reason=f"not translatable: {type(exc).__name__}: {exc}")
        if sum(p.width for p in pieces) == 0:
            return Translation(None, list(self.approx), "can match the empty string (matches every line)")
        return Translation("".join(p.text for p in pieces), list(self.approx))

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

    # ------------------------------------------------------------------------------- one node
    def node(self, op: Any, av: Any, flags: int) -> Piece:
        """One parse-tree node (``re._parser`` opcode ``op``, argument ``av``) as a superset piece."""
        if op in (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN):
            return self.charset(op, av, flags)
        if op is _c.AT:
            return self.anchor(av, flags)
        if op is _c.SUBPATTERN:
            return self.group(av, flags)
        if op is _c.BRANCH:
            return self.branch([self.seq(b, flags) for b in av[1]])
        if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            return self.repeat(op, av, flags)
        if op is _c.ATOMIC_GROUP:
            return self.atomic_group(av, flags)
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            self._note("lookaround ignored by the prefilter")
            return Piece("", 0)
        if op is _c.GROUPREF:
            return self.backreference(av)
        if op is _c.GROUPREF_EXISTS:
            return self.conditional(av, flags)
        raise Untranslatable(f"unexpected operator {op}")

    def seq(self, nodes: Iterable[tuple[Any, Any]], flags: int) -> Piece:
        pieces = [self.node(op, av, flags) for op, av in nodes]
        if len(pieces) == 1:
            return pieces[0]
        return Piece("".join(p.text for p in pieces), sum(p.width for p in pieces), size=sum(p.size for p in pieces))

    def charset(self, op: Any, av: Any, flags: int) -> Piece:
        """A single-character atom as an explicit class, from the exact set Python's engine matches."""
        ranges = self.oracle.atom((op, av), flags)
        if self.ascii_only:
            ranges = subtract(intersect(ranges, ((0, ASCII_MAX),)), ((NL, NL),))
            if not ranges:
                return Piece(_NEVER_ASCII, 1, atom=True, size=1)
            neg = complement(ranges, 0, ASCII_MAX)
            text = class_text(*((ranges, False) if len(ranges) <= len(neg) else (neg, True)))
            return Piece(text, 1, atom=True, size=1)
        ranges = subtract(ranges, ((NL, NL), *SURROGATES))
        if not ranges:
            # Only "\n" or lone surrogates, which never occur inside a valid line: "\n" is a harmless
            # superset (it can only match a line separator; re rejects whatever that nominates).
            return Piece(r"\x{a}", 1, atom=True, size=1)
        # A class reaching beyond ASCII becomes a multi-byte UTF-8 automaton: count it as 4 for the
        # repeat-size guard.
        size = 4 if ranges[-1][1] > ASCII_MAX else 1
        neg = subtract(complement(ranges), SURROGATES)
        if min(len(ranges), len(neg)) > _CLASS_RANGE_LIMIT:
            self._note("large Unicode class widened to any non-ASCII character")
            ascii_part = intersect(ranges, ((0, ASCII_MAX),))
            ranges = norm((*ascii_part, (ASCII_MAX + 1, 0xD7FF), (0xE000, MAX_CP)))
            return Piece(class_text(ranges, False), 1, atom=True, size=size)
        text = class_text(*((ranges, False) if len(ranges) <= len(neg) else (neg, True)))
        return Piece(text, 1, atom=True, size=size)

    def anchor(self, at: Any, flags: int) -> Piece:
        """``^``, ``$``, ``\\A``, ``\\Z``, ``\\b``, ``\\B``, for engines scanning a newline-joined chunk."""
        if at in (_c.AT_BEGINNING, _c.AT_BEGINNING_STRING, _c.AT_BEGINNING_LINE):
            return Piece("^", 0, anchor=True)  # the engines run in multi-line mode: start of a line
        if at in (_c.AT_END, _c.AT_END_STRING, _c.AT_END_LINE):
            return Piece("$", 0, anchor=True)  # lines have no "\n", so Python's $ is the line end
        if at in (_c.AT_BOUNDARY, _c.AT_NON_BOUNDARY):
            # ASCII input: Python's Unicode \b agrees with the engines' ASCII \b. (?a) patterns: also on
            # any input (non-ASCII is non-word for both). Otherwise drop it (a superset).
            if self.ascii_only or flags & _c.SRE_FLAG_ASCII:
                return Piece(r"\b" if at is _c.AT_BOUNDARY else r"\B", 0, anchor=True)
            self._note("word boundary ignored for non-ASCII input")
            return Piece("", 0)
        raise Untranslatable(f"unexpected anchor {at}")

    def group(self, av: Any, flags: int) -> Piece:
        """A (capturing or flag-scoped) group: non-capturing in the output; its width feeds backreferences."""
        group, add, remove, sub = av
        inner = self.seq(sub, (flags | add) & ~remove)
        if group is not None:
            self.group_width[group] = inner.width
        return inner if inner.atom else Piece(f"(?:{inner.text})", inner.width, size=inner.size)

    @staticmethod
    def branch(branches: list[Piece]) -> Piece:
        return Piece(
            "(?:" + "|".join(b.text for b in branches) + ")",
            min(b.width for b in branches),
            size=sum(b.size for b in branches),
        )

    def repeat(self, op: Any, av: Any, flags: int) -> Piece:
        """Greedy, lazy or possessive ``{lo,hi}``; too large an unrolled size is widened to ``{k,}``."""
        lo, hi, sub = av
        if op is _c.POSSESSIVE_REPEAT:
            self._note("possessive repeat treated as greedy")
        item = self.seq(sub, flags)
        if not item.text:
            return Piece("", 0)
        unbounded = hi == _c.MAXREPEAT
        unit = max(item.size, 1)
        if unit * (lo + 1 if unbounded else hi) > _REPEAT_SIZE_LIMIT:
            lo, unbounded = max(0, min(lo, _REPEAT_SIZE_LIMIT // unit - 1)), True
            self._note("large repeat count widened")
        if lo == 0 and not unbounded and hi == 0:
            return Piece("", 0)
        body = item.text if item.atom else f"(?:{item.text})"
        return Piece(body + self._quantifier(lo, hi, unbounded), lo * item.width,
                     size=unit * (lo + 1 if unbounded else hi))

    @staticmethod
    def _quantifier(lo: int, hi: int, unbounded: bool) -> str:
        if unbounded:
            return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
        if lo == hi:
            return "" if lo == 1 else f"{{{lo}}}"
        return "?" if (lo, hi) == (0, 1) else f"{{{lo},{hi}}}"

    # ---------------------------------------------- constructs the engines lack, widened to a superset
    def atomic_group(self, av: Any, flags: int) -> Piece:
        self._note("atomic group treated as a plain group")
        inner = self.seq(av, flags)
        return Piece(f"(?:{inner.text})", inner.width, size=inner.size)

    def backreference(self, group: int) -> Piece:
        """The same text as the group captured: at least as long as the group's shortest match (capped: a
        long counted run of "any character" is costly to compile and adds little selectivity)."""
        self._note("backreference widened to any text")
        width = min(self.group_width.get(group, 0), 8)
        return Piece(r"[^\x{a}]" + ("*" if width == 0 else f"{{{width},}}"), width, size=4 * (width + 1))

    def conditional(self, av: Any, flags: int) -> Piece:
        """``(?(group)yes|no)``: either branch."""
        self._note("conditional group widened to either branch")
        _group, yes, no = av
        return self.branch([self.seq(yes, flags), self.seq(no or [], flags)])
