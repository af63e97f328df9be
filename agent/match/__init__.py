"""Log line matching: which of a source's rule patterns match which lines, exactly as Python ``re`` says.

Callers need only ``MultiMatcher`` (``scan`` for lines, ``scan_chunk`` for a raw ``LineChunk``, ``nominees``
for the fast engine's unconfirmed candidates of one (prefilters),
``describe`` for /status and check-config; ``cache_dir`` to keep compiled programs across restarts) and
``available_engines``. Underneath, a fast engine (hyperscan,
else RE2) prefilters whole chunks and ``re`` confirms each candidate. See docs/matching.md for the
user-facing reference.

The modules, from the bottom up: ``sre`` (access to Python's private regex parser), ``charsets`` (code point
sets and what a class matches), ``translate`` (a pattern as a superset the engines can run),
``engines`` (hyperscan, re2 and the choice between them), ``cache`` (their compiled programs on disk),
``matcher`` (the scan itself).
"""

from agent.match.cache import MAX_FILES, CacheState, MatchCache
from agent.match.engines import EngineName, available_engines
from agent.match.matcher import LineMatch, MultiMatcher, compile_pattern

__all__ = ["MAX_FILES", "CacheState", "EngineName", "LineMatch", "MatchCache", "MultiMatcher", "available_engines",
           "compile_pattern"]
