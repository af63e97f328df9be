"""RE2: one alternation searched over the chunk, jumping to the next line after each hit.

The engine when hyperscan is not usable (e.g. not x86-64). An alternation names only one alternative per
hit, so an RE2 ``Set`` of the same expressions then says which patterns to confirm on that line (matters
for rules that hit often). The ``re2`` module (~1.5 MiB) is imported on first use: an agent on hyperscan
never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from agent.lazy import lazy_import
from agent.match import sre
from agent.match.engines.base import CandidateLine, Engine, EngineName, Variant, split
from agent.match.translate import Translation

try:  # the fallback engine: imported on first use, ~1.5 MiB an agent on hyperscan never needs
    _re2: Any = lazy_import("re2")
except ImportError as exc:  # pragma: no cover - depends on the platform
    _re2 = None
    _RE2_MISSING = f"{type(exc).__name__}: {exc}"
else:
    _RE2_MISSING = ""

_RE2_MAX_MEM: Final = 64 << 20


@dataclass(slots=True)
class Re2Variant(Variant):
    """``program`` is the compiled alternation of every covered expression."""

    line_set: Any = None  # a re2 Set of the same expressions, to tell which ones match a hit line


class Re2Engine(Engine[Re2Variant]):
    name: ClassVar[EngineName] = "re2"

    def unavailable(self) -> str:
        return _RE2_MISSING or sre.MISSING if _re2 is None or sre.parser is None else ""

    def build(self, translations: Sequence[Translation], *, ascii_only: bool) -> Re2Variant:
        assert _re2 is not None
        variant = Re2Variant()
        exprs = split(translations, variant)
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

    def candidate_lines(self, variant: Re2Variant, chunk: bytes) -> list[CandidateLine]:
        # The alternation only reports the leftmost alternative per position, so a hit says "this line is
        # worth checking", not which patterns match: the Set (or, failing that, every covered pattern)
        # says which ones to confirm with re. Then the search resumes at the next line.
        search = variant.program.search
        covered = variant.covered
        line_match = variant.line_set.Match if variant.line_set is not None else None
        find, rfind = chunk.find, chunk.rfind
        out: list[CandidateLine] = []
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
