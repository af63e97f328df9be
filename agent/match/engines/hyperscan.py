"""hyperscan: all patterns in one block-mode database, scanning a whole newline-joined chunk once.

Each reported match end is mapped to the line that contains it. The fastest engine by far, but its wheels
exist for x86-64 only and need SSSE3, hence the self-test before it is trusted. Patterns hyperscan rejects
are retried alone in PREFILTER mode (where hyperscan widens what it cannot do exactly), else left to ``re``.

A database serializes (``dump``/``load``, for ``agent.match.cache``), but only for the same hyperscan
release and a CPU with the same features it was compiled for: ``cache_identity`` names both, and hyperscan
itself refuses (at scan time) a database built for another platform.

Thread safety: a scratch space must never be used by two scans at once, so each variant keeps one per
thread; calls from ``asyncio.to_thread`` workers (even concurrent ones) are safe. python-hyperscan releases
the GIL while ``hs_scan`` runs and re-takes it only for each match callback.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

from agent.match import sre
from agent.match.engines.base import CandidateLine, Engine, EngineName, Variant, reshape, split
from agent.match.translate import Translation

try:  # optional fast engine: the agent must still work (slower) without it
    import hyperscan as _hs
except Exception as exc:  # pragma: no cover - depends on the platform (x86-64 only wheels)
    _hs = None
    _HS_MISSING = f"{type(exc).__name__}: {exc}"
else:
    _HS_MISSING = ""

_HIT_SHIFT: Final = 24  # hits are packed as (end offset << _HIT_SHIFT) | pattern index
# CPU flags (Linux /proc/cpuinfo names) that decide which code paths hyperscan compiles a database for: a
# database from a host with AVX2/AVX-512 must not be loaded on one without them. The rest are its baseline.
_CPU_FLAGS: Final = ("ssse3", "sse4_1", "sse4_2", "popcnt", "bmi", "bmi2", "avx", "avx2", "avx512f",
                     "avx512bw", "avx512vl", "avx512vbmi")


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


@functools.cache
def _host_target() -> str:
    """What hyperscan compiles for on this host (its version and the CPU features it targets), as it says."""
    db = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    db.compile(expressions=[b"x"], ids=[0], elements=1, flags=[_hs.HS_FLAG_MULTILINE])
    info = db.info()
    return info.decode("ascii", "replace") if isinstance(info, bytes) else str(info)


@functools.cache
def _cpu_flags() -> str:
    """The CPU flags of ``_CPU_FLAGS`` this host has ("unknown" where /proc/cpuinfo cannot be read)."""
    try:
        with Path("/proc/cpuinfo").open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.partition(":")[2].split())
                    return " ".join(flag for flag in _CPU_FLAGS if flag in have)
    except OSError:
        pass
    return "unknown"


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

    def cache_identity(self) -> dict[str, str] | None:
        assert _hs is not None
        return {
            "library": str(getattr(_hs, "_hs_ext", _hs).__version__),  # hs_version(): release and build date
            "binding": str(getattr(_hs, "__version__", "unknown")),
            "target": _host_target(),
            "cpu": _cpu_flags(),
        }

    def dump(self, variant: HyperscanVariant) -> bytes:
        return b"" if variant.program is None else bytes(_hs.dumpb(variant.program))

    def load(self, blob: bytes, shape: Variant) -> HyperscanVariant:
        if bool(blob) != bool(shape.covered):
            raise ValueError("a database must be there exactly when some pattern is covered")
        variant = reshape(HyperscanVariant(), shape)
        # hs_deserialize_database checks its own magic, version and CRC; the platform is checked at scan time
        # (the cache's probe scan)
        variant.program = _hs.loadb(blob, _hs.HS_MODE_BLOCK) if blob else None
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
