"""hyperscan: all patterns in one block-mode database, scanning a whole newline-joined chunk once.

Each reported match end is mapped to the line that contains it. The fastest engine by far, but its wheels
exist for x86-64 only and need SSSE3, hence the self-test before it is trusted. Patterns hyperscan rejects
are retried alone in PREFILTER mode (where hyperscan widens what it cannot do exactly), else left to ``re``.

A database serializes (``dump``/``load``, for ``agent.match.cache``), but only for the same hyperscan
release and a CPU with the same features it was compiled for: ``cache_identity`` names both, and hyperscan
itself refuses (at scan time) a database built for another platform.

Two kinds of false negatives of the library (python-hyperscan 0.9.1 bundles vectorscan 5.4.12; Intel's
hyperscan 5.4.2, bundled by python-hyperscan 0.6.0, showed neither), worked around here as far as they go
(tests/test_match_hyperscan_tail.py keeps them reproduced):

- A block-mode scan of a buffer of 17-69 bytes does not report a match whose last byte is the buffer's
  last byte (for a ``$``: the newline after it is), when the database also holds some other patterns
  (``lx*=``, ``(?i)error``, ``warn|error|crit``, ``status\\s*=\\s*5\\d\\d``...). Chunks have no trailing
  newline, so a short line appended to a log was lost. Never seen for a longer buffer (probed up to 5,000
  bytes) nor 2 bytes or more before the end, so a chunk shorter than ``_SHORT_CHUNK`` is scanned as a copy
  padded with newlines to past that length; longer chunks are scanned in place (no copy on the hot path).
  Newlines are neutral: no translation matches one, and ``$``/``\\b`` see one as the end of the line.
- A match of one or two characters that skips an optional or repeated part of its pattern (``a\\s*=`` on
  ``a=``, ``=\\s*"``, ``x\\s*y``) is missed almost anywhere past the first 16 bytes of a buffer, padded or
  not. Those patterns go to ``re`` (``always``, with the reason); they would nominate a large share of all
  lines anyway. Patterns of a single length (``ab``, ``\\d\\d``) were never missed that way. Longer ones
  still are, rarely: fuzzing lost ~8 of a million matching (line, pattern) pairs, all of generic patterns of
  3-4 characters such as ``[a-f][^x]"+[a-f]`` (~1,300 per million before these workarounds). Only a fixed
  library removes that.

Thread safety: a scratch space must never be used by two scans at once, so each variant keeps one per
thread; calls from ``asyncio.to_thread`` workers (even concurrent ones) are safe. python-hyperscan releases
the GIL while ``hs_scan`` runs and re-takes it only for each match callback.
"""

from __future__ import annotations

import functools
import re
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
# Chunks shorter than this are scanned as a copy padded with newlines to _SHORT_CHUNK + 2 bytes: vectorscan
# loses matches on the last byte of buffers of 17-69 bytes (see the module docstring); 256 leaves a margin.
_SHORT_CHUNK: Final = 256
# A pattern with a shorter shortest match, and longer ones too, is left to re: vectorscan can miss it (module
# docstring).
_MIN_WIDTH: Final = 3
_SHORT_REASON: Final = ("shortest match under 3 characters through an optional or repeated part: the hyperscan "
                        "build (vectorscan 5.4.12) can miss such matches")
_HEX_ESCAPE: Final = re.compile(r"\\x\{([0-9a-f]+)\}")
_REPEATS: Final = frozenset(
    getattr(sre.constants, name) for name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
    if sre.constants is not None and hasattr(sre.constants, name))
# CPU flags (Linux /proc/cpuinfo names) that decide which code paths hyperscan compiles a database for: a
# database from a host with AVX2/AVX-512 must not be loaded on one without them. The rest are its baseline.
_CPU_FLAGS: Final = ("ssse3", "sse4_1", "sse4_2", "popcnt", "bmi", "bmi2", "avx", "avx2", "avx512f",
                     "avx512bw", "avx512vl", "avx512vbmi")


def _on_hs_match(pattern: int, _start: int, end: int, _flags: int, sink: list[int]) -> None:
    """hyperscan match callback: kept to one append (it runs once per match end, with the GIL re-taken)."""
    sink.append((end << _HIT_SHIFT) | pattern)


def _loses_short_matches(text: str) -> bool:
    """Whether vectorscan may miss matches of this translation: its shortest match is under ``_MIN_WIDTH``
    characters and not its only length (the lost ones skip an optional or repeated part: ``a\\s*=`` on
    ``a=``). A repeat at the very end is counted at its minimum: it changes which lines match no more than
    where they stop (``\\w.+`` nominates the lines ``\\w.`` does)."""
    try:
        tree = sre.parser.parse(_HEX_ESCAPE.sub(lambda m: f"\\U{int(m.group(1), 16):08x}", text), 0)
    except Exception:  # pragma: no cover - every translation is valid Python syntax once unescaped
        return True  # cannot tell: re is always right
    items = list(tree)
    low = high = 0
    while items and items[-1][0] in _REPEATS:
        repeat_min, _repeat_max, body = items.pop()[1]
        body_low, body_high = body.getwidth()
        low, high = low + repeat_min * body_low, high + repeat_min * body_high
    if items:
        head_low, head_high = sre.parser.SubPattern(tree.state, items).getwidth()
        low, high = low + head_low, high + head_high
    return low < _MIN_WIDTH and high != low


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
        short = [i for i, text in exprs.items() if _loses_short_matches(text)]
        for i in short:
            del exprs[i]
            variant.reasons[i] = _SHORT_REASON
        variant.always = tuple(sorted((*variant.always, *short)))
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
        size = len(chunk)
        # a short chunk: scan a newline-padded copy (vectorscan loses a match on the last byte of a short
        # buffer, see the module docstring); offsets stay the chunk's, the padding holds no match
        data = chunk if size >= _SHORT_CHUNK else chunk + b"\n" * (_SHORT_CHUNK + 2 - size)
        hits: list[int] = []
        variant.program.scan(data, match_event_handler=_on_hs_match, context=hits, scratch=variant.scratch())
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
            if end > size:  # in the padding: impossible (no translation matches "\n"), and sorted last
                break
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
