"""Bytes to lines (agent/tail/reader.py). Decoding without losing count: replaced bytes are counted, and a cut
line never splits a character; other encodings through a FileSource."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.tail import TailConfig
from agent.tail.reader import decode_counting
from tests.tail_helpers import Harness, tail_config


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return tail_config(tmp_path, **{"name": "t", "rotate_wait": 0.2, **kw})


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
