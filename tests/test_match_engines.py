"""Engine choice and the engines' own limits: unknown names, auto order, patterns an engine rejects."""

from __future__ import annotations

import pytest

from agent.match import MultiMatcher
from tests.match_helpers import ENGINES, check


def test_unknown_engine_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown matcher engine"):
        MultiMatcher(["x"], engine="pcre")  # type: ignore[arg-type]


def test_auto_picks_the_fastest_available() -> None:
    m = MultiMatcher(["x"])
    assert m.engine == ENGINES[0]
    assert m.describe()["engine"] == m.engine


def test_never_matching_and_oversized_patterns_stay_exact() -> None:
    patterns = [r"(?a)a\ba", r"(?:[a-z]{1000}){50}x", r"(?:(?:a{1000}){1000}){10}b", "ERROR"]
    lines = ["aa", "a a", "ERROR " + "q" * 1000 + "x", "a" * 3000 + "b"]
    for engine in ENGINES:
        check(MultiMatcher(patterns, engine=engine), lines)
