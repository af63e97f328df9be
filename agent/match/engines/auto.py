"""Which engine runs: the fastest one usable here that builds, in the order hyperscan, then re2, then re.

``re`` is not an engine object: it is the absence of a prefilter (every pattern on every line), always
available and impossible to fail. Asking for an engine by name forces it (tests, benchmarks) and raises
``RuntimeError`` instead of degrading; ``auto`` records why each faster engine was skipped, for
``describe()``. With a ``ProgramCache`` (``agent.match.cache``), each engine's variants are first looked up
there and stored after a build: translation and compilation are skipped on a hit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from agent.match.engines.base import Engine, EngineName, Variant
from agent.match.engines.hyperscan import HyperscanEngine
from agent.match.engines.re2 import Re2Engine
from agent.match.translate import Translation, translate_patterns

ORDER: Final[tuple[EngineName, ...]] = ("hyperscan", "re2", "re")
PREFILTERS: Final[dict[str, Engine[Any]]] = {"hyperscan": HyperscanEngine(), "re2": Re2Engine()}


def unavailable(name: str) -> str:
    """Why engine ``name`` cannot run in this process, or "" when it can."""
    if name == "re":
        return ""
    engine = PREFILTERS.get(name)
    if engine is None:
        raise ValueError(f"unknown matcher engine {name!r} (expected hyperscan, re2, re or auto)")
    return engine.unavailable()


def available_engines() -> list[EngineName]:
    """Engines usable in this process, fastest first (``re`` is always there)."""
    return [name for name in ORDER if not unavailable(name)]


class ProgramCache(Protocol):
    """Where built variants are kept between processes (``agent.match.cache.MatchCache``). Never raises."""

    def load(self, engine: Engine[Any]) -> tuple[Variant, Variant] | None: ...

    def store(self, engine: Engine[Any], ascii: Variant, uni: Variant) -> None: ...


@dataclass(frozen=True, slots=True)
class Selection:
    """The engine that built, its two variants, and why faster ones were skipped."""

    name: EngineName
    engine: Engine[Any] | None  # None: plain re, every pattern on every line
    ascii: Variant  # for pure-ASCII chunks
    uni: Variant  # for chunks with any non-ASCII text
    unavailable: dict[str, str]


def select(patterns: Sequence[str], choice: EngineName | Literal["auto"],
           cache: ProgramCache | None = None) -> Selection:
    """Build ``patterns`` (already valid for ``re``) with engine ``choice``, or the best one for ``auto``;
    ``cache``, when given, supplies variants built before and keeps the ones built now."""
    skipped: dict[str, str] = {}
    translations: dict[bool, list[Translation]] | None = None
    for name in ORDER if choice == "auto" else (choice,):
        missing = unavailable(name)
        if missing:
            skipped[name] = missing
            if choice != "auto":
                raise RuntimeError(f"matcher engine {name!r} is not available: {missing}")
            continue
        engine = PREFILTERS.get(name)
        try:
            if engine is None or not patterns:
                ascii = uni = Variant(always=tuple(range(len(patterns))) if engine is None else ())
            elif cache is not None and (cached := cache.load(engine)) is not None:
                ascii, uni = cached
            else:
                if translations is None:  # made once, even when an engine fails and the next one tries
                    translations = translate_patterns(patterns)
                ascii = engine.build(translations[True], ascii_only=True)
                uni = engine.build(translations[False], ascii_only=False)
                if cache is not None:
                    cache.store(engine, ascii, uni)
        except Exception as exc:
            if choice != "auto":
                raise RuntimeError(f"matcher engine {name!r} failed to build: {exc}") from exc
            skipped[name] = f"build failed: {type(exc).__name__}: {exc}"
            continue
        return Selection(name, engine, ascii, uni, skipped)
    raise AssertionError("unreachable: the re engine always builds")  # pragma: no cover
