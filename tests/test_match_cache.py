"""The compiled-program cache (``MultiMatcher(cache_dir=...)``, ``agent.match.cache``).

What must hold: a warm build skips translating and compiling (proved by making both raise), gives exactly
the results of an uncached build, and any file that is not exactly what this process would have written
(truncated, a flipped byte, another format, another engine version, a program that does not load or scans
differently, another owner, a symlink) is ignored with a ``match_cache_ignored`` warning, rebuilt and
replaced. The directory stays bounded (least recently used out) and an unwritable one only costs the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from structlog.testing import capture_logs

from agent.match import MAX_FILES, MatchCache, MultiMatcher
from agent.match import cache as cache_mod
from agent.match.engines import auto
from tests.match_helpers import ENGINES, FRAGMENTS, PATTERNS, check, summary
from tests.match_helpers import LINES as GENERATED

CACHEABLE = [name for name in ENGINES if name != "re"]
pytestmark = pytest.mark.skipif(not CACHEABLE, reason="no fast engine installed: nothing to cache")

LINES = [
    *FRAGMENTS,
    " ".join(FRAGMENTS),
    "Nov 27 08:00:00 web-1 sshd[811]: Failed password for invalid user admin from 203.0.113.7",
    '10.1.2.3 - - [27/Nov/2026] "POST /api/v1/orders/42 HTTP/1.1" 502 157 "-"',
    "2026-11-27 ERROR [main] took 12345ms user=bob x denied Connection reset by peer",
    "Grüße STRAẞE \u212a ſs ٣٤٥ 中文日志 😀 end",
    "", "aab", "hello hello", "foobar", "xyz",
]


def cache_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob(f"{cache_mod.PREFIX}*{cache_mod.SUFFIX}"))


def cache_file(directory: Path, patterns: list[str], engine: str) -> Path:
    """Where a matcher on ``engine`` keeps ``patterns`` (the key, computed as the cache computes it)."""
    c = MatchCache(directory, patterns)
    identity = c.identity(auto.PREFILTERS[engine])
    assert identity is not None
    return directory / f"{cache_mod.PREFIX}{c.key(identity)}{cache_mod.SUFFIX}"


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, translating or compiling anything fails loudly: only a cache load can succeed."""

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("translated or compiled despite a warm cache")

    monkeypatch.setattr(auto, "translate_patterns", boom)
    for engine in auto.PREFILTERS.values():
        monkeypatch.setattr(engine, "build", boom)


def assert_same_as_uncached(cached: MultiMatcher, uncached: MultiMatcher) -> None:
    assert cached.engine == uncached.engine
    assert summary(cached.scan(LINES)) == summary(uncached.scan(LINES))
    check(cached, LINES)
    check(cached, [line for line in LINES if line.isascii()])  # the ASCII variant's path
    theirs, ours = uncached.describe(), cached.describe()
    assert {k: v for k, v in ours.items() if k != "cache"} == {k: v for k, v in theirs.items() if k != "cache"}


def ignored(logs: list[dict[str, Any]]) -> list[str]:
    return [e["reason"] for e in logs if e["event"] == "match_cache_ignored"]


# ------------------------------------------------------------------------------------- cold and warm
@pytest.mark.parametrize("engine", CACHEABLE)
def test_cold_build_writes_a_file_and_a_warm_build_loads_it_without_compiling(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    uncached = MultiMatcher(PATTERNS, engine=engine)  # type: ignore[arg-type]
    assert uncached.describe()["cache"] == "off"
    cold = MultiMatcher(PATTERNS, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert cold.describe()["cache"] == "stored"
    assert cache_files(tmp_path) == [cache_file(tmp_path, PATTERNS, engine).name]
    assert_same_as_uncached(cold, uncached)

    request.getfixturevalue("no_build")
    with capture_logs() as logs:
        warm = MultiMatcher(PATTERNS, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert warm.describe()["cache"] == "loaded"
    assert ignored(logs) == []
    assert_same_as_uncached(warm, uncached)


@pytest.fixture(scope="module", params=CACHEABLE)
def warm_and_uncached(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                      ) -> tuple[MultiMatcher, MultiMatcher]:
    cache_dir = tmp_path_factory.mktemp("warm")
    MultiMatcher(PATTERNS, engine=request.param, cache_dir=cache_dir)
    warm = MultiMatcher(PATTERNS, engine=request.param, cache_dir=cache_dir)
    assert warm.describe()["cache"] == "loaded"
    return warm, MultiMatcher(PATTERNS, engine=request.param)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(lines=GENERATED)
def test_generated_lines_give_the_same_results_warm_and_uncached(
    warm_and_uncached: tuple[MultiMatcher, MultiMatcher], lines: list[str]
) -> None:
    warm, uncached = warm_and_uncached
    data = "\n".join(lines).encode("utf-8")
    assert summary(warm.scan(lines, data)) == summary(uncached.scan(lines, data))
    check(warm, lines)


def test_auto_engine_loads_the_fastest_engines_file(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    MultiMatcher(PATTERNS, cache_dir=tmp_path)
    assert cache_files(tmp_path) == [cache_file(tmp_path, PATTERNS, CACHEABLE[0]).name]
    request.getfixturevalue("no_build")
    warm = MultiMatcher(PATTERNS, cache_dir=tmp_path)
    assert (warm.engine, warm.describe()["cache"]) == (CACHEABLE[0], "loaded")
    check(warm, LINES)


def test_patterns_re_cannot_prefilter_and_the_re_engine_round_trip(tmp_path: Path) -> None:
    patterns = ["x*", r"(\w+) \1", "ERROR"]  # empty-matching (always re), backreference (widened, guarded)
    for engine in CACHEABLE:
        MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
        warm = MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
        assert warm.describe()["cache"] == "loaded"
        assert [f["index"] for f in warm.describe()["fallback"]] == [0]
        check(warm, ["", "ERROR", "hello hello", "a b"])
    plain = MultiMatcher(patterns, engine="re", cache_dir=tmp_path / "plain")
    assert plain.describe()["cache"] == "unused" and not (tmp_path / "plain").exists()


def test_a_different_pattern_list_gets_a_different_file(tmp_path: Path) -> None:
    engine = CACHEABLE[0]
    first = ["ERROR", r"took (?P<ms>\d+)ms"]
    MultiMatcher(first, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    for other in (first[::-1], [*first, "WARN"], ["ERROR"]):  # order matters: indexes are part of the answer
        m = MultiMatcher(other, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
        assert m.describe()["cache"] == "stored"
        check(m, ["ERROR took 12ms", "WARN", "x"])
    assert len(cache_files(tmp_path)) == 4
    assert MultiMatcher(first, engine=engine, cache_dir=tmp_path).describe()["cache"] == "loaded"  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- damaged files
def split_file(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    assert data.startswith(cache_mod.MAGIC)
    body = data[len(cache_mod.MAGIC):].partition(b"\n")[2]
    head, _, payload = body.partition(b"\n")
    return json.loads(head), payload


def write_signed(path: Path, header: dict[str, Any], payload: bytes) -> None:
    """A well-formed file with a valid checksum: what another version (or a careless writer) produces."""
    body = json.dumps(header).encode() + b"\n" + payload
    path.write_bytes(cache_mod.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def flip_header_byte(path: Path) -> None:
    data = path.read_bytes()
    at = data.index(b'"covered":[') + len(b'"covered":[')  # the first covered index: 0 -> 1
    path.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])


def other_engine_version(path: Path) -> None:
    header, payload = split_file(path)
    header["identity"]["engine.library"] = "0.0.1 1970-01-01"
    write_signed(path, header, payload)


def foreign_index(path: Path) -> None:
    header, payload = split_file(path)
    header["variants"]["ascii"]["always"].append(10_000)
    write_signed(path, header, payload)


def garbled_program(path: Path) -> None:
    header, payload = split_file(path)
    meta = header["variants"]["uni"]
    start = meta["offset"] + meta["length"] // 2
    write_signed(path, header, payload[:start] + bytes(b ^ 0xFF for b in payload[start:start + 64])
                 + payload[start + 64:])


def other_probe(path: Path) -> None:
    header, payload = split_file(path)
    header["variants"]["ascii"]["probe"] = "0" * 64
    write_signed(path, header, payload)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (lambda p: p.write_bytes(b""), "not a match cache file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "checksum mismatch"),
    "flipped payload byte": (flip_last_byte, "checksum mismatch"),
    "flipped header byte": (flip_header_byte, "checksum mismatch"),
    "wrong magic": (lambda p: p.write_bytes(b"dutytail-match-cache 0\n" + p.read_bytes()[len(cache_mod.MAGIC):]),
                    "not a match cache file"),
    "not json": (lambda p: write_signed_raw(p, b"{nope"), "malformed header"),
    "other engine version": (other_engine_version, "engine.library differs"),
    "index out of range": (foreign_index, "malformed header: always"),
    "garbled program": (garbled_program, "uni program"),
    "other nominations": (other_probe, "ascii program nominates other lines"),
}


def write_signed_raw(path: Path, head: bytes) -> None:
    body = head + b"\n"
    path.write_bytes(cache_mod.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


@pytest.mark.parametrize("engine", CACHEABLE)
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_ignored_logged_and_replaced(tmp_path: Path, engine: str, damage: str) -> None:
    patterns = PATTERNS[:20]
    MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    path = cache_file(tmp_path, patterns, engine)
    good = path.read_bytes()
    spoil, reason = DAMAGE[damage]
    spoil(path)
    assert path.read_bytes() != good
    with capture_logs() as logs:
        m = MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    reasons = ignored(logs)
    assert len(reasons) == 1 and reason in reasons[0], logs
    assert m.describe()["cache"] == "stored"
    check(m, LINES)
    assert cache_files(tmp_path) == [path.name]
    assert not list(tmp_path.glob(".*.tmp"))  # the replacement went through a temporary file, then rename
    with capture_logs() as logs:
        again = MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert again.describe()["cache"] == "loaded" and ignored(logs) == []


def test_a_file_owned_by_someone_else_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = CACHEABLE[0]
    MultiMatcher(["ERROR"], engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    owner = cache_file(tmp_path, ["ERROR"], engine).stat().st_uid
    monkeypatch.setattr(cache_mod.os, "geteuid", lambda: owner + 1)
    with capture_logs() as logs:
        m = MultiMatcher(["ERROR"], engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    assert m.describe()["cache"] == "stored"
    assert ["owned by uid" in r for r in ignored(logs)] == [True]


def test_a_symlinked_file_is_not_followed(tmp_path: Path) -> None:
    engine = CACHEABLE[0]
    elsewhere = tmp_path / "elsewhere"
    MultiMatcher(["ERROR"], engine=engine, cache_dir=elsewhere)  # type: ignore[arg-type]
    (tmp_path / "cache").mkdir()
    link = cache_file(tmp_path / "cache", ["ERROR"], engine)
    link.symlink_to(cache_file(elsewhere, ["ERROR"], engine))
    with capture_logs() as logs:
        m = MultiMatcher(["ERROR"], engine=engine, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
    assert m.describe()["cache"] == "stored" and not link.is_symlink()
    assert ["unreadable" in r for r in ignored(logs)] == [True]


# ---------------------------------------------------------------------------------- bounds, failures
def test_the_directory_keeps_the_most_recently_used_files(tmp_path: Path) -> None:
    engine = CACHEABLE[0]
    lists = [[f"rule-{k} failed", "ERROR"] for k in range(MAX_FILES + 2)]
    for patterns in lists[:MAX_FILES]:
        MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    paths = [cache_file(tmp_path, patterns, engine) for patterns in lists]
    for age, path in enumerate(paths[:MAX_FILES]):  # list 0 the oldest: explicit times, no sleeping
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    (tmp_path / "notes.txt").write_text("not ours")
    stale = tmp_path / f".{cache_mod.PREFIX}dead.tmp"
    stale.write_bytes(b"a writer died")
    os.utime(stale, (1_000_000, 1_000_000))
    assert MultiMatcher(lists[0], engine=engine, cache_dir=tmp_path).describe()["cache"] == "loaded"  # type: ignore[arg-type]
    for patterns in lists[MAX_FILES:]:
        MultiMatcher(patterns, engine=engine, cache_dir=tmp_path)  # type: ignore[arg-type]
    kept = {paths[0], *paths[3:]}  # list 0 was used last; lists 1 and 2 were the least recently used
    assert cache_files(tmp_path) == sorted(p.name for p in kept)
    assert (tmp_path / "notes.txt").exists() and not stale.exists()


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_unwritable_cache_dir_degrades_to_no_cache(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should be")
    cache_dir = blocker if where == "a file" else blocker / "cache"
    with capture_logs() as logs:
        m = MultiMatcher(PATTERNS[:20], cache_dir=cache_dir)
    assert m.describe()["cache"] == "unstored"
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["match_cache_store_failed"]
    check(m, LINES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_a_read_only_cache_dir_degrades_to_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # root ignores directory permissions: make the write itself fail, as on a read-only mount
    def read_only(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)  # the cache imports tempfile when it first writes
    with capture_logs() as logs:
        m = MultiMatcher(PATTERNS[:20], cache_dir=tmp_path)
    assert m.describe()["cache"] == "unstored"
    assert [e["error"] for e in logs if e["event"] == "match_cache_store_failed"] == [
        "OSError: [Errno 30] Read-only file system"]
    check(m, LINES)
    assert list(tmp_path.iterdir()) == []
