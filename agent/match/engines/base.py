"""What a fast engine is to the matcher: something that compiles translated patterns and nominates lines.

A fast engine never decides a match. It compiles the superset translations (``agent.match.translate``)
into a *program*, and for a chunk of newline-joined lines it names the lines worth checking and the
patterns to check on each; ``re`` then confirms (``agent.match.matcher``). So an engine may over-report
freely but must never miss a line a pattern's translation matches.

Each engine builds two variants, one for pure-ASCII chunks and one for any UTF-8 (see ``translate``). A
``Variant`` holds everything a scan needs besides per-thread scratch, including what the engine left to
plain ``re``; nothing is derived from the translations after ``build``. That is what makes compiled
programs cacheable on disk (``agent.match.cache``): ``dump(variant) -> bytes`` / ``load(blob, shape) ->
Variant`` next to ``build``, and ``cache_identity()`` naming what a dumped program depends on besides the
patterns and the code (library version, CPU). The shared fields (``covered``, ``always``, ``reasons``,
``approx``) are stored by the cache itself; an engine (de)serializes only its program.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from agent.match.translate import Translation

EngineName = Literal["hyperscan", "re2", "re"]
CandidateLine = tuple[int, int, list[int]]  # (start, end, pattern indexes): chunk[start:end] is the line


@dataclass(slots=True)
class Variant:
    """Engine program for one input kind (pure ASCII or any UTF-8) plus what it leaves to plain re."""

    program: Any = None  # the engine's compiled form (hyperscan.Database, re2 pattern); None: nothing to scan
    covered: tuple[int, ...] = ()  # pattern indexes the program nominates candidates for
    always: tuple[int, ...] = ()  # pattern indexes re must run on every line
    reasons: dict[int, str] = field(default_factory=dict)  # why an index is in `always`
    approx: dict[int, list[str]] = field(default_factory=dict)  # why a covered index is widened


V = TypeVar("V", bound=Variant)


class Engine(ABC, Generic[V]):
    """A prefilter engine. Instances are stateless and shared; per-build state lives in its ``Variant``s."""

    name: ClassVar[EngineName]

    @abstractmethod
    def unavailable(self) -> str:
        """Why this engine cannot run in this process (shown by ``describe()``), or "" when it can."""

    @abstractmethod
    def build(self, translations: Sequence[Translation], *, ascii_only: bool) -> V:
        """Compile the translations for one input kind. Patterns it cannot take go to ``always``, with a
        reason; raising means the whole engine is unusable for this pattern set."""

    @abstractmethod
    def candidate_lines(self, variant: V, chunk: bytes) -> list[CandidateLine]:
        """Every line of ``chunk`` the program nominates, in order, with the patterns to confirm on it.

        Called only when ``variant.program`` is not None; ``chunk`` is valid UTF-8 (pure ASCII for the
        ASCII variant) with lines joined by ``b"\\n"``. Must be safe to call from several threads at once.
        """

    # ------------------------------------------------------------- the on-disk cache (agent.match.cache)
    def cache_identity(self) -> dict[str, str] | None:
        """What a dumped program depends on besides the patterns and the source code (library version, CPU
        features the program was compiled for), as strings for the cache key; None: not cacheable."""
        return None

    def dump(self, variant: V) -> bytes:
        """The engine-specific part of ``variant`` (its program) as bytes ``load`` can read back.

        Only called when ``cache_identity()`` is not None. The bytes are written to a file others may be
        able to write to, so ``load`` must not trust them beyond what its library verifies.
        """
        raise NotImplementedError(f"{self.name} programs cannot be cached")

    def load(self, blob: bytes, shape: Variant) -> V:
        """A variant from ``dump``'s bytes; ``shape`` carries the shared fields (already validated).

        Raise anything on bytes that do not make a program: the cache then rebuilds.
        """
        raise NotImplementedError(f"{self.name} programs cannot be cached")


def reshape(variant: V, shape: Variant) -> V:
    """``variant`` given ``shape``'s shared fields (copies): what an engine's ``load`` returns."""
    variant.covered, variant.always = tuple(shape.covered), tuple(shape.always)
    variant.reasons = dict(shape.reasons)
    variant.approx = {i: list(why) for i, why in shape.approx.items()}
    return variant


def split(translations: Sequence[Translation], variant: Variant) -> dict[int, str]:
    """Record in ``variant`` the patterns without a translation; return the others' texts by index."""
    exprs: dict[int, str] = {}
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
    return exprs
