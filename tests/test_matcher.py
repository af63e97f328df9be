"""MultiMatcher must give exactly what the naive ``re.search`` loop gives, on every engine.

The fast engines are only prefilters over a translated pattern, so the dangerous failure is a silent false
negative on some corner of Python's regex semantics. These tests throw realistic rules plus the known traps
(Unicode classes, case folding specials, anchors, lookaround, backreferences, empty matches) at generated
lines, and compare span, groups and order against plain ``re`` for each available engine.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.lines import LineChunk
from agent.match import MultiMatcher, available_engines, charsets, sre

ENGINES = available_engines()

REALISTIC = [
    r"\bERROR\b",
    r"(?i)out of memory",
    r"Connection (?:refused|reset by peer)",
    r'" (?P<status>5\d\d) (?P<bytes>\d+) ',
    r"segfault at [0-9a-f]+ ip",
    r'Exception in thread "(?P<thread>[^"]+)"',
    r"^\s+at [\w.$]+\(",
    r"(?i)\b(?:fatal|panic)\b",
    r"disk (?P<dev>sd[a-z]+\d*) (?:failed|error)",
    r"took (?P<ms>\d{4,})ms",
    r"user=(?P<user>\w+) .*denied",
    r"Out of memory: Killed process (?P<pid>\d+) \((?P<comm>[^)]+)\)",
    r"upstream timed out.*upstream: \"(?P<up>[^\"]+)\"",
    r"OOMKilled|CrashLoopBackOff",
    r"level=(?:error|crit)\b",
    r"(?P<ip>\d{1,3}(?:\.\d{1,3}){3})",
    r"sshd\[\d+\]: Failed password for (?:invalid user )?(?P<user>\S+)",
    r"(?x) disk \s+ full  # verbose mode",
    r"timeout after (?P<s>\d+(?:\.\d+)?)s?$",
    r"^\[(?P<ts>[^\]]+)\] (?P<lvl>WARN|ERROR)",
]

TRICKY = [
    r"(\w+) \1",  # backreference
    r"foo(?=bar)",  # lookahead
    r"(?<!x)yz",  # negative lookbehind
    r"(?i)straße",  # ß / ẞ folding
    r"(?i)k\w",  # KELVIN SIGN folds to k
    r"(?i)[^k]s",  # negated class under IGNORECASE; long s
    r"(?i)ı",  # dotless i
    r"\d+",  # Unicode digits (Arabic-Indic, ...)
    r"[^\W\d_]+",  # Unicode letters
    r"\s\S",  # Unicode spaces (NBSP, U+2028 ...)
    r"é\b",  # word boundary next to non-ASCII
    r"\bé",
    r"\B-\B",
    r"end$",  # $ at end of line
    r"\Aabc\Z",
    r"x*",  # matches the empty string: every line
    r"^$",  # only empty lines
    r"(?s)a.b",
    r"(?m)^b$",
    r"(?a)\w+é",  # ASCII-only classes
    r"(?a:\b)ü",
    r"(a)?(?(1)b|c)",  # conditional
    r"(?>a+)b",  # atomic group
    r"a++b",  # possessive
    r"[à-ÿ]{2}",
    r"\n",  # only lines that contain a newline
    r"\x00",
    r"a{1001}",  # beyond RE2's repeat limit
    r"(?:(?:ab){2,3}){2}c",
    r"\ud800",  # a lone surrogate in the pattern
    r"(?i)[a-z]+\d",
    r"[\s\S]q",
    r"(?-i:A)(?i:b)",
    r"a\ba",  # hyperscan: "can never match" on ASCII input
    r"(\w{300}) \1",  # widened repeat + backreference
]

PATTERNS = REALISTIC + TRICKY

FRAGMENTS = [
    "ERROR", "error", " ERRORS ", "out of MEMORY", "Connection refused", "Connection reset by peer",
    '" 503 1234 ', '" 200 99 ', "segfault at 7f3a ip", 'Exception in thread "main"', "    at com.x.Y$1(",
    "FATAL", "panic:", "disk sda1 failed", "took 12345ms", "took 99ms", "user=bob x denied",
    "Out of memory: Killed process 42 (java)", 'upstream timed out, upstream: "http://10.0.0.1:80/"',
    "OOMKilled", "level=error", "level=crit", "10.1.2.3", "999.1.1.1", "sshd[123]: Failed password for root",
    "disk  full", "timeout after 3.5s", "[2024-01-01] WARN", "hello hello", "foobar", "foo", "xyz", "yz",
    "STRASSE", "straße", "STRAẞE", "\u212a", "ki", "ſs", "Ks", "ı", "I", "İ", "٣٤٥", "12", "abc", "end",
    "a", "b", "c", "aab", "ab", "ü", "é", "é-", "-", " - ", "\u00a0x", "\u2028x", "à", "ÿ", "q", "A", "B",
    "\x00", "中文日志", "😀", "\t", "\r", "$", "\\", "(", "]",
]
SPICE = st.sampled_from(["é", "ß", "ẞ", "\u212a", "ſ", "ı", "İ", "٣", "\u00a0", "\u2028", "中", "😀", "µ", "Ω"])
PIECE = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
    st.text(max_size=4).map(lambda s: s.replace("\n", " ")),
    SPICE,
)
LINE = st.lists(PIECE, max_size=6).map("".join)
LINES = st.lists(LINE, max_size=25)
# Lines the tailer should never produce but journald records can (embedded "\n") or a bad decoder could
# (lone surrogates): the matcher must still be exact on them.
ODD_LINE = st.one_of(LINE, st.sampled_from(["a\nb", "end\n", "foo\ud800bar", "\udcff", "\n"]))

PROFILE = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def naive(patterns: list[str], lines: list[str]) -> list[tuple[int, int, re.Match[str]]]:
    compiled = [re.compile(p) for p in patterns]
    return [(i, j, m) for i, line in enumerate(lines) for j, rx in enumerate(compiled) if (m := rx.search(line))]


def summary(results: list[tuple[int, int, re.Match[str]]]) -> list[tuple[Any, ...]]:
    return [(i, j, m.span(), m.groups(), m.groupdict(), m.string) for i, j, m in results]


def check(m: MultiMatcher, lines: list[str], data: bytes | None = None) -> None:
    expected = summary(naive(list(m.patterns), lines))
    assert summary(m.scan(lines, data)) == expected
    # The raw-chunk path (what the file source hands over) must give the same matches, in the same order.
    # It only exists for lines a file can hold: no "\n" inside, valid UTF-8, at least one line.
    try:
        raw = "\n".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        return
    if lines and not any("\n" in line for line in lines):
        chunk = LineChunk(raw, len(lines), ascii=raw.isascii())
        assert [(j, *rest) for _, j, *rest in expected] == [
            (j, m.span(), m.groups(), m.groupdict(), m.string) for j, m in m.scan_chunk(chunk)
        ]


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


def test_unknown_engine_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown matcher engine"):
        MultiMatcher(["x"], engine="pcre")  # type: ignore[arg-type]


def test_auto_picks_the_fastest_available() -> None:
    m = MultiMatcher(["x"])
    assert m.engine == ENGINES[0]
    assert m.describe()["engine"] == m.engine


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "re"])
def test_describe_names_fallbacks_and_widened_patterns(engine: str) -> None:
    m = MultiMatcher(["plain", "x*", r"(\w)\1", r"foo(?=bar)"], engine=engine)  # type: ignore[arg-type]
    info = m.describe()
    assert info["engine"] == engine and info["patterns"] == 4
    assert [f["index"] for f in info["fallback"]] == [1]
    assert "empty string" in info["fallback"][0]["reason"]
    assert {w["index"] for w in info["widened"]} == {2, 3}


def test_never_matching_and_oversized_patterns_stay_exact() -> None:
    patterns = [r"(?a)a\ba", r"(?:[a-z]{1000}){50}x", r"(?:(?:a{1000}){1000}){10}b", "ERROR"]
    lines = ["aa", "a a", "ERROR " + "q" * 1000 + "x", "a" * 3000 + "b"]
    for engine in ENGINES:
        check(MultiMatcher(patterns, engine=engine), lines)


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


# ------------------------------------------------------------------------------------ translation core
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


# ------------------------------------------------------------------------------------- rules over a chunk
def test_rules_see_the_same_hits_in_a_raw_chunk_and_in_lines() -> None:
    """The file source hands rules a LineChunk; journald hands them str lines. Same rules, same hits."""
    from agent.rules import RuleConfig, RuleSet

    rules = RuleSet([
        RuleConfig(name="fail", match=r"FAIL (?P<job>\w+)", exclude=r"job=ignored",
                   identity=["job"], resolve={"match": r"OK (?P<job>\w+)"}),
        RuleConfig(name="disk", contains="No space left"),
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
