"""MultiMatcher: one fast prefilter pass per chunk, stdlib ``re`` for the real answer.

Rules are written in Python ``re`` syntax and downstream code needs real ``re.Match`` objects (groups feed
alert templates), so the results here are, by contract, exactly those of ``re.compile(p).search(line)`` for
every pattern and line. Running 20 patterns per line with ``re`` manages 0.05-0.2M lines/s (bench/); a log
burst needs an order of magnitude more. So a fast engine (``engines``) only *nominates* candidate (line,
pattern) pairs and ``re`` confirms them (see docs/matching.md and the "Matching speed" field notes). Patterns
the engine cannot take (``describe()`` lists them), and lines it cannot see faithfully (an embedded ``\\n``,
a lone surrogate), are checked with ``re`` directly.

Thread safety: ``scan()`` keeps all per-call state local and the engines' programs are read-only (hyperscan
scratch space is per thread), so calls from ``asyncio.to_thread`` workers, even concurrent ones, are safe.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from agent.lines import LineChunk
from agent.match.cache import CacheState, MatchCache
from agent.match.engines import CandidateLine, Engine, EngineName, Variant, select
from agent.match.guard import Guard, risk

LineMatch = tuple[int, int, re.Match[str]]  # (line index, pattern index, match)



@functools.lru_cache(maxsize=8192)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``re.compile``, remembered. A rule's pattern is compiled while its config validates and again by every
    matcher built from it; ``re``'s own cache (512 entries) keeps none of them once a config has 1,000 rules, and
    each compile costs ~0.1-0.2 ms (a restart with 1,000 rules compiled each pattern three times)."""
    return re.compile(pattern)

class MultiMatcher:
    """Find which of many Python-syntax patterns match which lines of a chunk, fast.

    ``scan(lines)`` returns ``(line index, pattern index, re.Match)`` for every pair where
    ``re.compile(pattern).search(line)`` matches, ordered by line then pattern: identical to the naive loop,
    whatever engine runs underneath (``engine``).
    """

    engine: EngineName

    def __init__(self, patterns: Sequence[str], *, engine: EngineName | Literal["auto"] = "auto",
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        """Compile ``patterns``; raise ``re.error`` naming the first invalid one.

        ``engine="auto"`` picks the fastest available engine (hyperscan, then re2, then re) and degrades if
        one fails to build; naming an engine forces it (tests, benchmarks) and raises ``RuntimeError`` when
        it is unavailable.

        ``cache_dir``: keep the fast engine's compiled programs there (``agent.match.cache``), so the next
        construction with the same patterns skips translating and compiling them (1,000 rules on
        hyperscan: ~2.5-4 s -> ~0.12 s). Results are the same with or without it; a cache file that cannot
        be used or written is logged and ignored, never an error.
        """
        self.patterns: tuple[str, ...] = tuple(patterns)
        compiled: list[re.Pattern[str]] = []
        for i, pattern in enumerate(self.patterns):
            if not isinstance(pattern, str):
                raise TypeError(f"pattern #{i} must be str, not {type(pattern).__name__}")
            try:
                compiled.append(compile_pattern(pattern))
            except re.error as exc:
                raise re.error(f"pattern #{i} {pattern!r}: {exc.msg}", exc.pattern, exc.pos) from exc
        self.compiled: tuple[re.Pattern[str], ...] = tuple(compiled)
        # patterns whose shape can backtrack catastrophically are confirmed in a child with a time budget
        self._risks = {i: why for i, p in enumerate(self.patterns) if (why := risk(p))}
        self.guard = Guard([self.patterns[i] for i in self._risks]) if self._risks else None
        self._search: tuple[Callable[[str], Any], ...] = tuple(self._searcher(i, c) for i, c in enumerate(compiled))
        cache = MatchCache(cache_dir, self.patterns) if cache_dir is not None else None
        chosen = select(self.patterns, engine, cache)
        self.cache_state: CacheState = cache.state if cache is not None else "off"
        self.engine = chosen.name
        self._prefilter: Engine[Any] | None = chosen.engine  # None: plain re on every line
        self._ascii: Variant = chosen.ascii
        self._uni: Variant = chosen.uni
        self._unavailable: dict[str, str] = chosen.unavailable

    def _searcher(self, index: int, compiled: re.Pattern[str]) -> Callable[[str], Any]:
        if self.guard is None or index not in self._risks:
            return compiled.search
        guard, slot = self.guard, list(self._risks).index(index)
        return lambda line: guard.search(slot, line)

    def abandoned(self) -> dict[int, int]:
        """Lines given up per pattern index (a risky pattern over its time budget on them)."""
        if self.guard is None:
            return {}
        risky = list(self._risks)
        return {risky[slot]: n for slot, n in self.guard.abandoned.items()}

    # ----------------------------------------------------------------------------------- reporting
    def describe(self) -> dict[str, Any]:
        """Engine in use and which patterns it cannot fully accelerate (for /status and check-config).

        ``fallback``: patterns run with plain ``re`` on every line (slow path), with the reason and the input
        kind it applies to ("ascii" chunks, "non-ascii" chunks); empty for the ``re`` engine, where that is
        every pattern. ``widened``: patterns the fast engine over-approximates; ``re`` confirms each candidate,
        so results stay exact, only a little more work is done. ``unavailable``: faster engines skipped, why.
        ``cache``: "off" (no ``cache_dir``), "loaded", "stored" (built, then written), "unstored" (built, could
        not be written) or "unused" (no fast engine program to keep).
        """
        fallback: list[dict[str, Any]] = []
        widened: list[dict[str, Any]] = []
        for i, pattern in enumerate(self.patterns if self._prefilter is not None else ()):
            on = [kind for kind, v in (("ascii", self._ascii), ("non-ascii", self._uni)) if i in v.always]
            if on:
                reason = self._uni.reasons.get(i) or self._ascii.reasons.get(i) or "unknown"
                fallback.append({"index": i, "pattern": pattern, "input": on, "reason": reason})
                continue
            why = list(dict.fromkeys([*self._ascii.approx.get(i, []), *self._uni.approx.get(i, [])]))
            if why:
                widened.append({"index": i, "pattern": pattern, "reason": "; ".join(why)})
        abandoned = self.abandoned()
        return {
            "engine": self.engine,
            "patterns": len(self.patterns),
            "fallback": fallback,
            "widened": widened,
            "guarded": [{"index": i, "pattern": self.patterns[i], "reason": why, "abandoned": abandoned.get(i, 0)}
                        for i, why in self._risks.items()],
            "unavailable": dict(self._unavailable),
            "cache": self.cache_state,
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
        prefilter = self._prefilter
        if prefilter is None:
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
            if self._candidate_keys(prefilter, variant, chunk, n_pat, keys) != n_lines - 1:
                chunk = None
        if chunk is None:
            keys.clear()
            chunk, special = self._encode_per_line(lines)
            variant = self._ascii if chunk.isascii() else self._uni
            self._candidate_keys(prefilter, variant, chunk, n_pat, keys)
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
        prefilter = self._prefilter
        if prefilter is None or variant.always or variant.program is None:
            lines = list(chunk)
            return [(j, m) for _, j, m in self.scan(lines, data)]
        search = self._search
        out: list[tuple[int, re.Match[str]]] = []
        for start, end, patterns in prefilter.candidate_lines(variant, data):
            line = data[start:end].decode("utf-8")
            for j in sorted(set(patterns)):
                m = search[j](line)
                if m is not None:
                    out.append((j, m))
        return out

    def nominees(self, chunk: LineChunk) -> list[CandidateLine] | None:
        """The fast engine's own nominations, unconfirmed: ``(start, end, pattern indexes)`` with
        ``chunk.data[start:end]`` a line where those patterns *may* match. A superset of :meth:`scan_chunk`'s
        answer, for callers that need no more (a prefilter) and would rather skip decoding every nominated line
        and an ``re`` search per pattern. None when the fast engine cannot answer alone (none in use, or a
        pattern ``re`` must run on every line); the caller then uses :meth:`scan_chunk`."""
        variant = self._ascii if chunk.ascii else self._uni
        prefilter = self._prefilter
        if not self.patterns or prefilter is None or variant.always or variant.program is None:
            return None
        return prefilter.candidate_lines(variant, chunk.data)

    def _scan_re(self, lines: Sequence[str]) -> list[LineMatch]:
        out: list[LineMatch] = []
        searches = tuple(enumerate(self._search))
        for i, line in enumerate(lines):
            for j, search in searches:
                m = search(line)
                if m is not None:
                    out.append((i, j, m))
        return out

    # ------------------------------------------------------------------------------------- encoding
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

    @staticmethod
    def _candidate_keys(prefilter: Engine[Any], variant: Variant, chunk: bytes, n_pat: int, keys: set[int]) -> int:
        """Add ``line * n_pat + pattern`` keys the fast engine nominates; return the chunk's newline count."""
        count = chunk.count
        line = pos = 0
        if variant.program is not None:
            for start, _end, patterns in prefilter.candidate_lines(variant, chunk):
                line += count(b"\n", pos, start)
                pos = start
                base = line * n_pat
                keys.update(base + j for j in patterns)
        return line + count(b"\n", pos)
