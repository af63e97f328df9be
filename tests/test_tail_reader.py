"""Bytes to lines (agent/tail/reader.py). Decoding without losing count: replaced bytes are counted, and a cut
line never splits a character; other encodings through a FileSource. Over-long lines: truncated, counted, never
dropped, with bounded memory for a 50 MiB line and across a restart in the middle of one."""

from __future__ import annotations

import codecs
import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.tail import TailConfig
from agent.tail.reader import decode_counting
from tests.tail_helpers import Harness, append, report, tail_config, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:  # the encodings tests' defaults (from test_tail.py)
    return tail_config(tmp_path, **{"name": "t", "rotate_wait": 0.2, **kw})


def lim_cfg(tmp_path: Path, **kw: object) -> TailConfig:  # the over-long lines tests' (from test_tail_limits.py)
    return tail_config(tmp_path, **{"name": "lim", "rotate_wait": 0.1, **kw})


def reference(raw: bytes, encoding: str, *, final: bool) -> tuple[str, int]:
    """What the first wave did: a counting error handler on an incremental decoder."""
    count = 0

    def handler(exc: UnicodeError) -> tuple[str, int]:
        nonlocal count
        assert isinstance(exc, UnicodeDecodeError)
        count += exc.end - exc.start
        return "\ufffd", exc.end

    codecs.register_error("test.reference", handler)
    text = codecs.getincrementaldecoder(encoding)("test.reference").decode(raw, final=final)
    return text, count


@pytest.mark.parametrize("encoding", ["utf-8", "gbk", "cp1252", "latin-1"])
@given(raw=st.binary(max_size=64), final=st.booleans())
def test_same_text_and_count_as_an_error_handler(encoding: str, raw: bytes, final: bool) -> None:
    assert decode_counting(raw, encoding, final=final) == reference(raw, encoding, final=final)


def test_examples() -> None:
    assert decode_counting(b"ok \xff\xfe end", "utf-8") == ("ok \ufffd\ufffd end", 2)
    assert decode_counting("aé".encode()[:-1], "utf-8", final=False) == ("a", 0)  # cut inside é
    assert decode_counting("aé".encode()[:-1], "utf-8") == ("a\ufffd", 1)


# --- encodings, through a FileSource --------------------------------------------------------------------------


async def test_invalid_utf8_replaced_and_counted(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_bytes(b"ok one\nbad \xff\xfe here\ncut \xe4\xb8\nok two\n")
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(4)
    await h.stop()
    assert h.lines == ["ok one", "bad \ufffd\ufffd here", "cut \ufffd", "ok two"]
    assert h.stats.bytes_replaced == 4
    assert h.batches[0].data == "\n".join(h.lines).encode()


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("latin-1", "café naïve"), ("gbk", "中文日志 错误"), ("cp1252", "price €5")],
)
async def test_other_encodings(tmp_path: Path, encoding: str, text: str) -> None:
    a = tmp_path / "a.log"
    a.write_bytes(f"{text}\nline two {text}\n".encode(encoding))
    h = Harness(cfg(tmp_path, encoding=encoding))
    await h.start()
    await h.wait_lines(2)
    await h.stop()
    assert h.lines == [text, f"line two {text}"]
    assert h.stats.bytes_replaced == 0


async def test_gbk_invalid_bytes_counted(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_bytes("好".encode("gbk") + b"\x81\n" + "坏".encode("gbk") + b"\n")
    h = Harness(cfg(tmp_path, encoding="gbk"))
    await h.start()
    await h.wait_lines(2)
    await h.stop()
    assert h.lines == ["好\ufffd", "坏"]
    assert h.stats.bytes_replaced == 1


# --- over-long lines ------------------------------------------------------------------------------------------


async def test_long_lines_truncated_counted_never_dropped(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    long1 = "L" * 5000
    long2 = "é" * 3000  # 6000 bytes: the cut must not split a character
    a.write_text(f"first\n{long1}\nmiddle\n{long2}\nlast\n", encoding="utf-8")
    h = Harness(lim_cfg(tmp_path, max_line_bytes=1024))
    await h.start()
    await h.wait_lines(5)
    await h.stop()
    assert h.lines == ["first", "L" * 1024, "middle", "é" * 512, "last"]
    assert h.stats.lines_truncated == 2
    assert h.stats.bytes_skipped == (5000 - 1024) + (6000 - 1024)
    assert h.stats.bytes_replaced == 0


async def test_fifty_megabyte_line_without_newline_bounded_memory(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, ["before"])
    chunk = b"x" * (1 << 20)
    h = Harness(lim_cfg(tmp_path))
    tracemalloc.start()
    try:
        await h.start()
        await h.wait_lines(1)
        with open(a, "ab") as fh:
            for _ in range(50):
                fh.write(chunk)  # 50 MiB, no newline yet
        await h.wait_lines(2)  # the truncated prefix, as soon as the line is known to be too long
        await wait_until(lambda: h.stats.bytes_read >= 50 << 20, what="reader went through the 50 MiB")
        await h.stop(crash=True)  # restart mid-line: the checkpoint says "skipping"
        state = json.loads(next(iter(h.committed.values())).state)
        assert state["skipping_long_line"] is True
        with open(a, "ab") as fh:
            fh.write(chunk[:1000] + b"\nafter\n")
        await h.start()
        await h.wait_lines(3)
        await h.stop()
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.lines == ["before", "x" * 65536, "after"]
    assert h.stats.lines_truncated == 1
    bare = [b for b in h.batches if not b.lines and not b.finished]
    assert 0 < len(bare) <= 60, f"{len(bare)} position-only batches for 50 x 1 MiB reads: at most one per read"
    assert peak < 24 << 20, f"peak traced memory {peak / 2**20:.1f} MiB for a 50 MiB line"
    report("50 MiB line without newline (+ restart while skipping)", 3, h.lines)


async def test_long_partial_line_at_start_at_end(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_bytes(b"old\n" + b"y" * 5000)  # an over-long unfinished line when we first start
    h = Harness(lim_cfg(tmp_path, start_at="end", max_line_bytes=1024))
    await h.start()
    await wait_until(lambda: bool(h.committed), what="start checkpoint")
    with open(a, "ab") as fh:
        fh.write(b"yyy\nnew\n")
    await h.wait_lines(1)
    await h.stop()
    assert h.lines == ["new"]


def test_utf8_validity_in_slices_agrees_with_a_whole_decode() -> None:
    """Chunks are validated in 64 KiB slices (no multi-MiB string per chunk): a character split at a slice
    edge is still valid, a bad byte anywhere or a cut character at the end is not."""
    from agent.tail.reader import VALIDATE_SLICE, valid_utf8

    text = ("é" * (VALIDATE_SLICE // 2 - 1) + "x" + "田中" * 40000).encode()
    assert valid_utf8(text)
    for bad in (text + b"\xc3", text[:VALIDATE_SLICE] + b"\xff" + text[VALIDATE_SLICE:], b"\xed\xa0\x80"):
        assert not valid_utf8(bad)
        with pytest.raises(UnicodeDecodeError):
            bad.decode("utf-8")


@given(st.lists(st.integers(0, 300), max_size=400), st.booleans())
def test_newlines_counted_by_either_loop_as_bytes_count(lengths: list[int], trailing: bool) -> None:
    """count_newlines picks bytes.count or the memchr deletion by the first 4 KiB's line length: both count
    exactly, whatever the lengths (short lines first then long ones, or the other way round)."""
    from agent.lines import count_newlines

    data = b"\n".join(b"x" * n for n in lengths) + (b"\n" if trailing else b"")
    assert count_newlines(data) == data.count(b"\n")
    for shape in (b"\n" * 5000 + b"y" * 100_000, b"y" * 100_000 + b"\n" * 5000, b"", b"no newline"):
        assert count_newlines(shape) == shape.count(b"\n")
