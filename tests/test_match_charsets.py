"""Code point sets: the range algebra, and the oracle that asks Python's engine what an atom matches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# --------------------------------------------------------------------------------------- range algebra
def test_norm_sorts_and_merges_overlapping_and_adjacent_ranges() -> None:
    assert charsets.norm([(10, 12), (1, 3), (4, 5), (11, 20), (30, 30)]) == ((1, 5), (10, 20), (30, 30))
    assert charsets.norm([]) == ()


def test_complement_subtract_intersect_from_points() -> None:
    assert charsets.complement(((0, 9), (20, 29))) == ((10, 19), (30, charsets.MAX_CP))
    assert charsets.complement(((5, 9),), 0, 0x7F) == ((0, 4), (10, 0x7F))
    assert charsets.subtract(((0, 0x7F),), ((10, 10), (0, 3))) == ((4, 9), (11, 0x7F))
    assert charsets.intersect(((0, 10), (20, 30)), ((5, 25),)) == ((5, 10), (20, 25))
    assert charsets.from_points([3, 1, 2, 7]) == ((1, 3), (7, 7))


SMALL = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40)).map(sorted).map(tuple), max_size=6)


def points(ranges: charsets.Ranges) -> set[int]:
    return {p for lo, hi in ranges for p in range(lo, hi + 1)}


@given(a=SMALL, b=SMALL)
def test_range_algebra_agrees_with_sets_of_points(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    na, nb = charsets.norm(a), charsets.norm(b)
    assert points(na) == points(a) and charsets.norm(na) == na  # canonical: normalising again changes nothing
    assert points(charsets.intersect(na, nb)) == points(na) & points(nb)
    assert points(charsets.subtract(na, tuple(b))) == points(na) - points(nb)
    assert points(charsets.complement(na, 0, 40)) == set(range(41)) - points(na)
