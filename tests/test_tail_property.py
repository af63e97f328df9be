"""Property test of the reader: any byte stream, any write boundaries, any restart points -> exactly the lines.

Drives the worker-side cycle (``TailCore``) synchronously (no event loop, no inotify): write a piece, run a
cycle, "commit" the batches, sometimes lose the last uncommitted batches and restart from the committed checkpoints. The
delivered lines must equal a reference split of everything written: complete lines only, over-long lines
cut to ``max_line_bytes`` at a character boundary, invalid bytes replaced.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.source import Checkpoint
from agent.tail import TailConfig, TailCore, TailStats
from agent.tail.watch import Hints

MAX_LINE = 256

line_bytes = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.text(alphabet="aé中\U0001f600 x", max_size=200).map(lambda t: t.encode()),
    st.integers(min_value=MAX_LINE - 3, max_value=MAX_LINE * 3).map(lambda n: b"L" * n),
    st.integers(min_value=MAX_LINE // 2, max_value=MAX_LINE * 2).map(lambda n: "é".encode() * n),
)


def reference(data: bytes) -> list[str]:
    out = []
    for raw in data.split(b"\n")[:-1]:
        if len(raw) > MAX_LINE:
            out.append(codecs.getincrementaldecoder("utf-8")("replace").decode(raw[:MAX_LINE], final=False))
        else:
            out.append(raw.decode("utf-8", "replace"))
    return out


def run_cycles(tailer: TailCore, committed: dict[str, Checkpoint], delivered: list[str], lose: int) -> None:
    """Run cycles until idle; commit every batch except the last ``lose`` (a crash loses those)."""
    produced = []
    for _ in range(200):
        result = tailer.cycle(Hints(rescan=True))
        produced.extend(e.batch for e in result.emitted)
        if not result.busy and not result.emitted:
            break
    keep = produced[: len(produced) - lose] if lose else produced
    for batch in keep:
        delivered.extend(batch.lines)
        if batch.checkpoint is not None:
            if batch.finished:
                committed.pop(batch.checkpoint.key, None)
            else:
                committed[batch.checkpoint.key] = batch.checkpoint


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line_bytes, max_size=30),
    trailing=st.binary(max_size=MAX_LINE * 2).filter(lambda b: b"\n" not in b),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    crashes=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=3)), min_size=8, max_size=8),
)
def test_any_stream_any_boundaries_any_restarts(
    lines: list[bytes], trailing: bytes, cuts: list[int], crashes: list[tuple[bool, int]]
) -> None:
    data = b"".join(x + b"\n" for x in lines) + trailing
    points = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.log"
        path.touch()
        config = TailConfig(
            name="prop",
            paths=[str(Path(tmp) / "*.log")],
            start_at="beginning",
            max_line_bytes=MAX_LINE,
            read_chunk_bytes=4096,
            fingerprint_bytes=16,
        )
        committed: dict[str, Checkpoint] = {}
        delivered: list[str] = []
        tailer = TailCore(config, {}, is_first_start=True, stats=TailStats())
        written = 0
        for i, point in enumerate(points):
            with open(path, "ab") as fh:
                fh.write(data[written:point])
            written = point
            crash, lose = crashes[i % len(crashes)]
            run_cycles(tailer, committed, delivered, lose if crash else 0)
            if crash:
                tailer.release()
                tailer = TailCore(config, dict(committed), is_first_start=False, stats=TailStats())
        run_cycles(tailer, committed, delivered, 0)
        tailer.release()
        assert delivered == reference(data)
        assert os.path.exists(path)
