"""A chunk of complete lines kept as the raw bytes read from a file, decoded only where someone looks.

Why this exists: a log source hands the rules ~1 MiB chunks, and in a real log 99.9% of the lines match
nothing. Decoding a chunk and splitting it into ~10,000 ``str`` objects cost more CPU than hyperscan's whole
scan of it, and all of it under the GIL (which the sender needs too). So the file source hands over the bytes
plus the line count; the matcher scans the bytes and decodes only the lines its engine nominates
(``MultiMatcher.scan_chunk``). Anything that wants the lines as ``str`` still gets them (the sequence
decodes and splits itself once, on first access), so correctness never depends on the fast path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

_PROBE_BYTES = 4096
_SHORT_LINE_BYTES = 48


def count_newlines(data: bytes) -> int:
    """How many ``b"\\n"`` ``data`` holds, by the faster of two C loops for its line length.

    ``bytes.count`` of one byte is a plain loop over every byte: 0.58 ms per MiB of the JSON benchmark's
    250-byte lines (bench/formats.py) on this project's 2-core machine. Deleting the newlines (``replace``)
    finds each one with ``memchr``, glibc's vectorised search: 0.22 ms per MiB there, 0.05 on 2,000-byte lines,
    but it pays a call per line and loses below ~40-byte lines (1.27 vs 0.30 ms per MiB of 8-byte lines). The
    first 4 KiB say which kind of log it is. The deletion's copy is freed at once (one chunk at a time)."""
    if data.count(b"\n", 0, _PROBE_BYTES) * _SHORT_LINE_BYTES > min(len(data), _PROBE_BYTES):
        return data.count(b"\n")
    return len(data) - len(data.replace(b"\n", b""))


class LineChunk(Sequence[str]):
    """Complete lines as valid UTF-8 bytes joined by single ``b"\\n"`` (no trailing newline).

    The producer guarantees validity (ASCII, or checked by a strict decode), that ``count`` is the number of
    lines (newlines + 1) and that ``ascii`` is ``data.isascii()``; consumers rely on all three without
    checking again (each check is a pass over the chunk).
    """

    __slots__ = ("_count", "_lines", "ascii", "data")

    def __init__(self, data: bytes, count: int, *, ascii: bool) -> None:
        self.data = data
        self._count = count
        self.ascii = ascii
        self._lines: list[str] | None = None

    def __len__(self) -> int:
        return self._count

    def _decoded(self) -> list[str]:
        if self._lines is None:
            self._lines = self.data.decode("utf-8").split("\n")
        return self._lines

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __repr__(self) -> str:
        return f"<LineChunk lines={self._count} bytes={len(self.data)}>"
