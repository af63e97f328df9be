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

Why a prefilter can never lose a match: engines are not fed the user's pattern text but a superset of it,
re-emitted from Python's own parse tree (agent/match/translate.py). Patterns whose translation could match
the empty string or that an engine rejects even in hyperscan's PREFILTER mode are run with ``re`` on every
line. ``describe()`` lists them.

Thread safety: ``scan()`` keeps all per-call state local; hyperscan scratch space is allocated per thread, so
calls from ``asyncio.to_thread`` workers (even concurrent ones) are safe. python-hyperscan releases the GIL
while ``hs_scan`` runs and re-takes it only for each match callback.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agent.lazy import lazy_import
from agent.lines import LineChunk
from agent.match import sre
from agent.match.translate import Translation, translate_patterns

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

__all__ = ["EngineName", "LineMatch", "MultiMatcher", "available_engines"]

EngineName = Literal["hyperscan", "re2", "re"]
LineMatch = tuple[int, int, re.Match[str]]  # (line index, pattern index, match)

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
    if _hs is not None and sre.parser is not None and not _hyperscan_probe():
        out.append("hyperscan")
    if _re2 is not None and sre.parser is not None:
        out.append("re2")
    out.append("re")
    return out


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
            if _hs is None or sre.parser is None:
                return _HS_MISSING or sre.MISSING
            return _hyperscan_probe()
        if name == "re2":
            return _RE2_MISSING or sre.MISSING if _re2 is None or sre.parser is None else ""
        if name == "re":
            return ""
        raise ValueError(f"unknown matcher engine {name!r} (expected hyperscan, re2, re or auto)")

    def _build(self, name: EngineName) -> None:
        everything = tuple(range(len(self.patterns)))
        if name == "re" or not self.patterns:
            self._ascii = self._uni = _Variant(always=everything if name == "re" else ())
            return
        translations = translate_patterns(self.patterns)
        build = self._build_hyperscan if name == "hyperscan" else self._build_re2
        self._ascii = build(translations[True], ascii_only=True)
        self._uni = build(translations[False], ascii_only=False)

    @staticmethod
    def _split(translations: list[Translation]) -> tuple[dict[int, str], _Variant]:
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

    def _build_hyperscan(self, translations: list[Translation], *, ascii_only: bool) -> _Variant:
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

    def _build_re2(self, translations: list[Translation], *, ascii_only: bool) -> _Variant:
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
