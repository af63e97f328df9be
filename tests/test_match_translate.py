"""The translator's output is a superset of each pattern: it must never cost a match.

Random token soups (anchors, classes, lookaround, repeats, flags) are translated for every engine and
scanned against plain ``re``.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.match import MultiMatcher
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
