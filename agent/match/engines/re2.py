"""RE2: one alternation searched over the chunk, jumping to the next line after each hit.

The engine when hyperscan is not usable (e.g. not x86-64). An alternation names only one alternative per
hit, so an RE2 ``Set`` of the same expressions then says which patterns to confirm on that line (matters
for rules that hit often). The ``re2`` module (~1.5 MiB) is imported on first use: an agent on hyperscan
never needs it. An RE2 program cannot be serialized, so the on-disk cache keeps the translated texts
instead and recompiles them (cheap next to translating).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from agent.lazy import lazy_import
from agent.match import sre
from agent.match.engines.base import CandidateLine, Engine, EngineName, Variant, reshape, split
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
    texts: tuple[str, ...] = ()  # the covered patterns' translations, in ``covered`` order (for the cache)


@functools.cache
def _library_version() -> str:
    """The installed google-re2 release (which expressions RE2 accepts is part of a cached variant)."""
    import importlib.metadata  # here, not at import: it brings zipfile, email and csv (~1 MiB) to every agent

    try:
        return importlib.metadata.version("google-re2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - installed some other way
        return "unknown"


def _options() -> Any:
    options = _re2.Options()
    options.max_mem = _RE2_MAX_MEM
    options.never_capture = True
    options.log_errors = False  # rejections are reported by describe(), not printed to stderr
    return options


def _alternation(texts: Sequence[str]) -> Any:
    """One RE2 program finding any of ``texts``; raises ``re2.error`` when RE2 rejects one."""
    return _re2.compile("(?m)" + "|".join(f"(?:{text})" for text in texts), _options())


def _line_set(texts: Sequence[str]) -> Any:
    """The alternation finds hit lines fast but names only one alternative per hit; a Set names every
    expression matching that line, so re confirms only those (matters for frequent rules). None when RE2
    cannot build it: then every covered pattern is confirmed on each hit line."""
    line_set = _re2.Set.SearchSet(_options())
    try:
        for text in texts:
            line_set.Add(text)
        line_set.Compile()
    except _re2.error:
        return None
    return line_set


class Re2Engine(Engine[Re2Variant]):
    name: ClassVar[EngineName] = "re2"

    def unavailable(self) -> str:
        return _RE2_MISSING or sre.MISSING if _re2 is None or sre.parser is None else ""

    def build(self, translations: Sequence[Translation], *, ascii_only: bool) -> Re2Variant:
        assert _re2 is not None
        variant = Re2Variant()
        exprs = split(translations, variant)
        ids = sorted(exprs)
        if not ids:
            return variant
        try:
            variant.program = _alternation([exprs[i] for i in ids])
        except _re2.error:
            kept = []
            for i in ids:
                try:
                    _alternation([exprs[i]])
                except _re2.error as exc:
                    variant.reasons[i] = f"re2 rejected it: {exc}"
                else:
                    kept.append(i)
            variant.always = tuple(sorted((*variant.always, *(i for i in ids if i not in kept))))
            ids = kept
            variant.program = _alternation([exprs[i] for i in ids]) if ids else None
        variant.covered = tuple(ids)
        variant.texts = tuple(exprs[i] for i in ids)
        variant.line_set = _line_set(variant.texts) if ids else None
        return variant

    # An RE2 program cannot be serialized: the cache keeps the translated texts (translation is ~95% of the
    # build time; compiling 1,000 of them with RE2 takes ~0.05 s) and which of them RE2 accepted.
    def cache_identity(self) -> dict[str, str] | None:
        return {"library": _library_version()}

    def dump(self, variant: Re2Variant) -> bytes:
        return json.dumps(list(variant.texts)).encode("utf-8")

    def load(self, blob: bytes, shape: Variant) -> Re2Variant:
        texts = json.loads(blob.decode("utf-8"))
        if not isinstance(texts, list) or len(texts) != len(shape.covered) or not all(
                isinstance(t, str) for t in texts):
            raise ValueError("expected one expression text per covered pattern")
        variant = reshape(Re2Variant(), shape)
        variant.texts = tuple(texts)
        if texts:
            variant.program = _alternation(texts)  # re2.error if this re2 rejects it: the cache rebuilds
            variant.line_set = _line_set(variant.texts)
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
