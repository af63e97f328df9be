"""Shared by the tests/test_match_*.py files: realistic rules, known traps, generated lines, and ``check``.

The fast engines are only prefilters over a translated pattern, so the dangerous failure is a silent false
negative on some corner of Python's regex semantics. ``check`` compares a MultiMatcher's span, groups and
order against the naive ``re.search`` loop, on both scan paths.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st

from agent.lines import LineChunk
from agent.match import MultiMatcher, available_engines

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
