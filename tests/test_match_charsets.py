"""Code point sets: the range algebra, and the oracle that asks Python's engine what an atom matches."""

from __future__ import annotations

import pytest

from agent.match import charsets, sre


@pytest.mark.skipif(sre.parser is None, reason="no access to Python's regex parser")
@pytest.mark.parametrize(
    "atom",
    [r"(?i)k", r"(?i)s", r"(?i)ß", r"(?i)ẞ", r"(?i)i", r"(?i)µ", r"(?i)[^k]", r"(?i)[a-z\d]", r"(?i)\W",
     r"(?ai)k", r"[^\W\d]", r"(?i)[^\s]", r"(?i)Σ"],
)
def test_charset_oracle_equals_full_unicode_scan(atom: str) -> None:
    """The reduced case-folding universe must give the same set as asking re about every code point."""
    from re import _parser

    oracle = charsets.CharsetOracle()
    parsed = _parser.parse(atom, 0)
    node = parsed.data[0]
    fast = oracle.atom(node, parsed.state.flags)
    full = oracle._scan_universe(node, parsed.state.flags)
    assert fast == full
