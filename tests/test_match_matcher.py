"""MultiMatcher must give exactly what the naive ``re.search`` loop gives, on every engine.

These tests throw realistic rules plus the known traps (Unicode classes, case folding specials, anchors,
lookaround, backreferences, empty matches) at generated lines, and compare span, groups and order against
plain ``re`` for each available engine; then the scan contract (errors, empty input, order, bad ``data``,
``describe()``, threads) and the rules layer on top of it.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.lines import LineChunk
from agent.match import MultiMatcher
from tests.match_helpers import ENGINES, FRAGMENTS, LINE, LINES, PATTERNS, REALISTIC, check, naive, summary

# Lines the tailer should never produce but journald records can (embedded "\n") or a bad decoder could
# (lone surrogates): the matcher must still be exact on them.
ODD_LINE = st.one_of(LINE, st.sampled_from(["a\nb", "end\n", "foo\ud800bar", "\udcff", "\n"]))

PROFILE = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture(scope="module", params=ENGINES)
def full(request: pytest.FixtureRequest) -> MultiMatcher:
    return MultiMatcher(PATTERNS, engine=request.param)


# ------------------------------------------------------------------------------------------ equivalence
@PROFILE
@given(lines=LINES)
def test_generated_lines_match_plain_re(full: MultiMatcher, lines: list[str]) -> None:
    check(full, lines)
    check(full, lines, "\n".join(lines).encode("utf-8"))


@PROFILE
@given(lines=st.lists(ODD_LINE, max_size=12))
def test_odd_lines_and_bad_data_still_exact(full: MultiMatcher, lines: list[str]) -> None:
    check(full, lines)
    check(full, lines, "\n".join(lines).encode("utf-8", "surrogatepass"))


def test_every_fragment_alone_and_together(full: MultiMatcher) -> None:
    check(full, FRAGMENTS)
    check(full, [" ".join(FRAGMENTS)])
    check(full, ["".join(FRAGMENTS)])


def test_ascii_and_non_ascii_chunks(full: MultiMatcher) -> None:
    ascii_lines = ["ERROR x", "foobar", "é-", "hello hello", "- a - b"]
    check(full, [line for line in ascii_lines if line.isascii()])
    check(full, ascii_lines)  # one non-ASCII line switches the chunk to the Unicode program


# ---------------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("engine", ENGINES)
def test_invalid_pattern_names_index_and_text(engine: str) -> None:
    with pytest.raises(re.error) as info:
        MultiMatcher(["ok", "bad(", "also ok"], engine=engine)  # type: ignore[arg-type]
    assert "#1" in str(info.value) and "'bad('" in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_empty_inputs(engine: str) -> None:
    m = MultiMatcher(REALISTIC, engine=engine)  # type: ignore[arg-type]
    assert m.scan([]) == []
    assert m.scan([], b"") == []
    assert MultiMatcher([], engine=engine).scan(["ERROR"]) == []  # type: ignore[arg-type]
    check(m, [""])
    check(m, ["", "", ""])


@pytest.mark.parametrize("engine", ENGINES)
def test_no_matches(engine: str) -> None:
    m = MultiMatcher(REALISTIC, engine=engine)  # type: ignore[arg-type]
    lines = ["all quiet on the western front"] * 100
    assert m.scan(lines) == []
    assert m.scan(lines, "\n".join(lines).encode()) == []


@pytest.mark.parametrize("engine", ENGINES)
def test_order_groups_and_multiple_patterns_per_line(engine: str) -> None:
    m = MultiMatcher([r"b(?P<x>\d)", r"a(\d)", r"\d"], engine=engine)  # type: ignore[arg-type]
    got = m.scan(["x", "a1 b2", "b3 a4"])
    assert [(i, j, mm.group(0), mm.groupdict()) for i, j, mm in got] == [
        (1, 0, "b2", {"x": "2"}), (1, 1, "a1", {}), (1, 2, "1", {}),
        (2, 0, "b3", {"x": "3"}), (2, 1, "a4", {}), (2, 2, "3", {}),
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_data_that_does_not_fit_the_lines_is_rebuilt(engine: str) -> None:
    m = MultiMatcher(["b$", "^a"], engine=engine)  # type: ignore[arg-type]
    lines = ["a\nb", "ab"]  # journald-style record with an embedded newline
    check(m, lines)
    check(m, lines, b"a\nb\nab")


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "re"])
def test_describe_names_fallbacks_and_widened_patterns(engine: str) -> None:
    m = MultiMatcher(["plain", "x*", r"(\w)\1", r"foo(?=bar)"], engine=engine)  # type: ignore[arg-type]
    info = m.describe()
    assert info["engine"] == engine and info["patterns"] == 4
    assert [f["index"] for f in info["fallback"]] == [1]
    assert "empty string" in info["fallback"][0]["reason"]
    assert {w["index"] for w in info["widened"]} == {2, 3}


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_scans_from_threads(engine: str) -> None:
    m = MultiMatcher(REALISTIC, engine=engine)  # type: ignore[arg-type]
    lines = [f"{f} {i}" for i in range(50) for f in FRAGMENTS]
    expected = summary(naive(REALISTIC, lines))
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                assert summary(m.scan(lines)) == expected
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not failures


# ------------------------------------------------------------------------------------- rules over a chunk
def test_rules_see_the_same_hits_in_a_raw_chunk_and_in_lines() -> None:
    """The file source hands rules a LineChunk; journald hands them str lines. Same rules, same hits."""
    from agent.rules import RuleConfig, RuleSet

    rules = RuleSet([
        RuleConfig.model_validate({"name": "fail", "match": r"FAIL (?P<job>\w+)", "exclude": r"job=ignored",
                                   "identity": ["job"], "resolve": {"match": r"OK (?P<job>\w+)"}}),
        RuleConfig.model_validate({"name": "disk", "contains": "No space left"}),
    ])
    lines = ["boot", "FAIL backup in 3s", "FAIL café job=ignored", "naïve FAIL größe No space left",
             "OK backup", "", "FAIL"]
    raw = "\n".join(lines).encode()
    chunk = LineChunk(raw, len(lines), ascii=raw.isascii())

    def summary(hits: list[Any]) -> list[tuple[Any, ...]]:
        return [(h.rule, h.kind, h.line, h.groups) for h in hits]

    expected = [
        (0, "fire", "FAIL backup in 3s", {"job": "backup"}),
        (0, "fire", "naïve FAIL größe No space left", {"job": "größe"}),
        (1, "fire", "naïve FAIL größe No space left", {}),
        (0, "resolve", "OK backup", {"job": "backup"}),
    ]
    assert summary(rules.evaluate(lines)) == expected
    assert summary(rules.evaluate(chunk)) == expected
    assert chunk._lines is None, "the chunk path decoded the whole chunk"
    fields = [{"unit": f"u{i}", "job": "from-field"} for i in range(len(lines))]
    with_fields = rules.evaluate(lines, fields=fields)
    assert [(h.line, h.groups) for h in with_fields][:2] == [
        ("FAIL backup in 3s", {"unit": "u1", "job": "backup"}),  # a named group wins over a source field
        ("naïve FAIL größe No space left", {"unit": "u3", "job": "größe"}),
    ]
