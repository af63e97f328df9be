"""The translator's output is a superset of each pattern: it must never cost a match.

Random token soups (anchors, classes, lookaround, repeats, flags) are translated for every engine and
scanned against plain ``re``; a few direct cases pin what the common dialect looks like for each construct.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.match import MultiMatcher, sre
from agent.match.translate import class_text, esc, translate_patterns
from tests.match_helpers import ENGINES, LINES, check

TOKENS = [
    "a", "b", "é", "ß", "k", "K", "s", "1", "٣", " ", "-", ".", r"\w", r"\W", r"\d", r"\D", r"\s", r"\S",
    r"\b", r"\B", "^", "$", r"\A", r"\Z", "[a-c]", "[^a]", "[^\\w]", "(?:a|b)", "(a)", r"(?=a)", r"(?!b)",
    r"(?<=a)", r"(?<!b)", "+", "*", "?", "{2}", "{1,2}", "+?", "(?i:k)", "(?i:ß)", "(?i:[^k])", "(?a:\\w)",
    "|",
]


@st.composite
def random_pattern(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=7))
    prefix = draw(st.sampled_from(["", "(?i)", "(?s)", "(?m)", "(?a)"]))
    pattern = prefix + "".join(tokens)
    try:
        re.compile(pattern)
    except re.error:
        return prefix + "a"
    return pattern


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=st.lists(random_pattern(), min_size=1, max_size=4), lines=LINES)
def test_random_patterns_match_plain_re(patterns: list[str], lines: list[str]) -> None:
    for engine in ENGINES:
        check(MultiMatcher(patterns, engine=engine), lines)


# ------------------------------------------------------------------------------ what the dialect looks like
WIDE_D = r"[0-9\x{80}-\x{d7ff}\x{e000}-\x{10ffff}]"  # \d on non-ASCII chunks: any non-ASCII code point too


NEEDS_PARSER = pytest.mark.skipif(sre.parser is None, reason="no access to Python's regex parser")


@NEEDS_PARSER
@pytest.mark.parametrize(
    ("pattern", "ascii", "uni", "approx"),
    [
        (r"code=(\d+)", r"code\x{3d}(?:[0-9])", rf"code\x{{3d}}(?:{WIDE_D})",
         ["large Unicode class widened to any non-ASCII character"]),  # trailing repeat cut to its minimum
        (r"\bERROR\b", r"\bERROR\b", "ERROR", ["word boundary ignored for non-ASCII input"]),
        (r"\Aabc\Z", "^abc$", "^abc$", []),
        (r"(?i)k", "[Kk]", r"[Kk\x{212a}]", []),  # KELVIN SIGN, from Python's own case folding
        (r"[^a]", r"[^\x{a}a]", r"[^\x{a}a]", []),  # never across a line break
        (r"\n", r"\x{ff}", r"\x{a}", []),  # cannot occur inside a line: harmless placeholders
        (r"foo(?=bar)", "foo", "foo", ["lookaround ignored by the prefilter"]),
        (r"a{1001}", "a{255,}", "a{255,}", ["large repeat count widened"]),
        (r"a++b", "a+b", "a+b", ["possessive repeat treated as greedy"]),
        (r"(?>a+)b", "(?:a+)b", "(?:a+)b", ["atomic group treated as a plain group"]),
        (r"(a)?(?(1)b|c)", "a?(?:b|c)", "a?(?:b|c)", ["conditional group widened to either branch"]),
        (r"a{0}b|c", "(?:b|c)", "(?:b|c)", []),
        (r"a{2}b{2,}c{1,3}", "a{2}b{2,}c", "a{2}b{2,}c", []),
    ],
)
def test_translations_in_the_common_dialect(pattern: str, ascii: str, uni: str, approx: list[str]) -> None:
    translations = translate_patterns([pattern])
    assert (translations[True][0].text, translations[False][0].text) == (ascii, uni)
    assert list(dict.fromkeys(translations[True][0].approx + translations[False][0].approx)) == approx


@NEEDS_PARSER
def test_backreference_keeps_the_group_width_and_empty_patterns_are_not_translated() -> None:
    ascii, uni = (t[0] for t in translate_patterns([r"(\w{3}) \1"]).values())
    assert ascii.text == r"(?:[0-9A-Z\x{5f}a-z]{3})\x{20}[^\x{a}]{3,}"
    assert ascii.approx == ["backreference widened to any text"]
    assert uni.text is not None and uni.text.endswith(r"\x{20}[^\x{a}]{3,}")
    for pattern in ("x*", "^$", "(?=a)"):
        t = translate_patterns([pattern])[True][0]
        assert t.text is None and "empty string" in t.reason


def test_esc_and_class_text() -> None:
    assert [esc(cp) for cp in (ord("A"), ord("7"), ord("-"), 0xE9)] == ["A", "7", r"\x{2d}", r"\x{e9}"]
    assert class_text(((0x2D, 0x2D), (0x61, 0x63)), False) == r"[\x{2d}a-c]"
    assert class_text(((0x61, 0x61),), False) == "a"
    assert class_text(((0x61, 0x61),), True) == "[^a]"
