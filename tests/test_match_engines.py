"""Engine choice and the engines' own limits: unknown names, auto order and degrading, patterns an engine
rejects, and each prefilter engine driven directly through the Engine interface."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agent.match import MultiMatcher
from agent.match.engines import CandidateLine, Engine, Variant, auto
from agent.match.translate import Translation, translate_patterns
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


# ------------------------------------------------------------------------------ the engine interface
PREFILTERS = [name for name in ENGINES if name != "re"]


@pytest.mark.parametrize("name", PREFILTERS)
def test_candidate_lines_name_each_hit_line_and_its_patterns(name: str) -> None:
    engine = auto.PREFILTERS[name]
    translations = translate_patterns(["ERROR", r"\d{3}", r"^x"])
    ascii_variant = engine.build(translations[True], ascii_only=True)
    assert ascii_variant.covered == (0, 1, 2) and ascii_variant.always == ()
    chunk = b"ok\nERROR 500\nfine\n404\nxy"
    got = [(start, end, sorted(set(p))) for start, end, p in engine.candidate_lines(ascii_variant, chunk)]
    assert got == [(3, 12, [0, 1]), (18, 21, [1]), (22, 24, [2])]
    assert [chunk[start:end] for start, end, _ in got] == [b"ERROR 500", b"404", b"xy"]
    uni_variant = engine.build(translations[False], ascii_only=False)
    chunk = "é 500\nERROR".encode()
    got = [(start, end, sorted(set(p))) for start, end, p in engine.candidate_lines(uni_variant, chunk)]
    assert got == [(0, 6, [1]), (7, 12, [0])]


@pytest.mark.parametrize("name", PREFILTERS)
def test_build_leaves_untranslatable_patterns_to_re(name: str) -> None:
    variant = auto.PREFILTERS[name].build(translate_patterns(["x*", "ok"])[True], ascii_only=True)
    assert variant.always == (0,) and variant.covered == (1,)
    assert "empty string" in variant.reasons[0]


def test_available_engines_are_in_order_and_end_with_plain_re() -> None:
    assert ENGINES[-1] == "re"
    assert ENGINES == [name for name in auto.ORDER if name in ENGINES]
    assert auto.unavailable("re") == ""


class _Broken(Engine[Variant]):
    """A prefilter that imports fine but cannot build (or, with ``missing``, is not installed)."""

    name = "hyperscan"

    def __init__(self, missing: str = "") -> None:
        self.missing = missing

    def unavailable(self) -> str:
        return self.missing

    def build(self, translations: Sequence[Translation], *, ascii_only: bool) -> Variant:
        raise RuntimeError("boom")

    def candidate_lines(self, variant: Variant, chunk: bytes) -> list[CandidateLine]:  # pragma: no cover
        raise AssertionError("never built")


@pytest.mark.parametrize(("broken", "why"), [(_Broken(), "build failed: RuntimeError: boom"),
                                             (_Broken("no wheel"), "no wheel")])
def test_auto_degrades_past_a_broken_engine_and_says_why(
    monkeypatch: pytest.MonkeyPatch, broken: _Broken, why: str
) -> None:
    monkeypatch.setitem(auto.PREFILTERS, "hyperscan", broken)
    m = MultiMatcher(["ERROR"])
    assert m.engine == next(name for name in ENGINES if name != "hyperscan")
    assert m.describe()["unavailable"]["hyperscan"] == why
    check(m, ["ok", "ERROR"])


def test_a_forced_engine_that_cannot_run_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(auto.PREFILTERS, "hyperscan", _Broken())
    with pytest.raises(RuntimeError, match="matcher engine 'hyperscan' failed to build: boom"):
        MultiMatcher(["ERROR"], engine="hyperscan")
    monkeypatch.setitem(auto.PREFILTERS, "hyperscan", _Broken("no wheel"))
    with pytest.raises(RuntimeError, match="matcher engine 'hyperscan' is not available: no wheel"):
        MultiMatcher(["ERROR"], engine="hyperscan")
