"""hyperscan: all patterns in one block-mode database, scanning a whole newline-joined chunk once.

Each reported match end is mapped to the line that contains it. The fastest engine by far, but its wheels
exist for x86-64 only and need SSSE3, hence the self-test before it is trusted. Patterns hyperscan rejects
are retried alone in PREFILTER mode (where hyperscan widens what it cannot do exactly), else left to ``re``.

Thread safety: a scratch space must never be used by two scans at once, so each variant keeps one per
thread; calls from ``asyncio.to_thread`` workers (even concurrent ones) are safe. python-hyperscan releases
the GIL while ``hs_scan`` runs and re-takes it only for each match callback.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from agent.match import sre
from agent.match.engines.base import CandidateLine, Engine, EngineName, Variant, split
from agent.match.translate import Translation

try:  # optional fast engine: the agent must still work (slower) without it
    import hyperscan as _hs
except Exception as exc:  # pragma: no cover - depends on the platform (x86-64 only wheels)
    _hs = None
    _HS_MISSING = f"{type(exc).__name__}: {exc}"
else:
    _HS_MISSING = ""

_HIT_SHIFT: Final = 24  # hits are packed as (end offset << _HIT_SHIFT) | pattern index


def _on_hs_match(pattern: int, _start: int, end: int, _flags: int, sink: list[int]) -> None:
    """hyperscan match callback: kept to one append (it runs once per match end, with the GIL re-taken)."""
    sink.append((end << _HIT_SHIFT) | pattern)


@functools.cache
def _probe() -> str:
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


@dataclass(slots=True)
class HyperscanVariant(Variant):
    """``program`` is a ``hyperscan.Database``; ``threads`` holds each thread's scratch for it."""

    threads: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def scratch(self) -> Any:
        """This thread's scratch space for ``program``, allocated on first use."""
        scratch = getattr(self.threads, "scratch", None)
        if scratch is None:
            scratch = _hs.Scratch(self.program)
            self.threads.scratch = scratch
        return scratch


class HyperscanEngine(Engine[HyperscanVariant]):
    name: ClassVar[EngineName] = "hyperscan"

    def unavailable(self) -> str:
        if _hs is None or sre.parser is None:
            return _HS_MISSING or sre.MISSING
        return _probe()

    def build(self, translations: Sequence[Translation], *, ascii_only: bool) -> HyperscanVariant:
        assert _hs is not None
        variant = HyperscanVariant()
        exprs = split(translations, variant)
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

    def candidate_lines(self, variant: HyperscanVariant, chunk: bytes) -> list[CandidateLine]:
        hits: list[int] = []
        variant.program.scan(chunk, match_event_handler=_on_hs_match, context=hits, scratch=variant.scratch())
        if not hits:
            return []
        hits.sort()
        mask = (1 << _HIT_SHIFT) - 1
        find, rfind = chunk.find, chunk.rfind
        out: list[CandidateLine] = []
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
