"""Decoding without losing count: replaced bytes are counted, and a cut line never splits a character."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.tail.reader import decode_counting


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
