"""Container log framing (agent/tail/partials.py): CRI ``P``/``F`` lines and Docker ``log`` values without a
newline joined into one record, through a real FileSource. Checkpoints stay at a pending record's first part:
a crash or a clean restart in the middle rebuilds it once; a rotation hands each part out exactly once; an
over-long record is cut with bounded memory; multiline looks at the messages, not the framing."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path
from typing import Literal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.lines import LineChunk
from agent.tail import MultilineConfig, TailConfig, TailStats
from agent.tail.multiline import RecordAssembler
from agent.tail.partials import CriFraming, DockerFraming, PartialJoiner, framing_for
from agent.tail.stream import Stream
from tests.tail_helpers import LOGROTATE, Harness, append, logrotate, tail_config, wait_until


class CriConfig(TailConfig):
    def framing(self) -> Literal["cri", "docker"] | None:
        return "cri"


class DockerConfig(TailConfig):
    def framing(self) -> Literal["cri", "docker"] | None:
        return "docker"


def cfg(tmp_path: Path, kind: Literal["cri", "docker"], **kw: object) -> TailConfig:
    base = tail_config(tmp_path, **{"name": "pods", "rotate_wait": 0.2, **kw})
    model = CriConfig if kind == "cri" else DockerConfig
    return model.model_validate(base.model_dump())


def ts(i: int) -> str:
    return f"2026-11-27T08:00:00.{i:09d}Z"


def cri(i: int, tag: str, message: str, stream: str = "stdout") -> str:
    return f"{ts(i)} {stream} {tag} {message}"


def docker(i: int, log: str, stream: str = "stdout") -> str:
    """What docker's json-file driver writes (compact, keys in this order)."""
    return json.dumps({"log": log, "stream": stream, "time": ts(i)}, separators=(",", ":"))


async def read_to_end(h: Harness, path: Path) -> None:
    """The tailer has read ``path`` to its end (records may still be pending)."""
    def done() -> bool:
        assert h.tailer is not None
        files = h.tailer.status()["files"]
        return any(f["path"] == str(path) and f["offset"] == path.stat().st_size for f in files)

    await wait_until(done, what=f"{path.name} read to its end")


def position(h: Harness) -> int:
    (state,) = [json.loads(c.state) for c in h.committed.values()]
    return int(state["position"])


# --- the joiner alone -----------------------------------------------------------------------------------------


def joiner(kind: Literal["cri", "docker"], max_line_bytes: int = 64 * 1024) -> tuple[PartialJoiner, TailStats]:
    stats = TailStats()
    return PartialJoiner(framing_for(kind), max_line_bytes=max_line_bytes, stats=stats, source="t"), stats


def run(j: PartialJoiner, f: Stream, lines: list[str], first: int = 0) -> tuple[list[str], list[int]]:
    starts, pos = [], first
    for line in lines:
        starts.append(pos)
        pos += len(line.encode()) + 1
    return j.join(f, lines, starts)


def stream() -> Stream:
    return Stream(path="/x.log", dev=1, ino=2)


def test_cri_joined_with_the_first_parts_time_and_stream() -> None:
    j, _ = joiner("cri")
    f = stream()
    lines = [cri(1, "F", "one"), cri(2, "P", "ab"), cri(3, "P:x", "cd"), cri(4, "F:x", "ef"), cri(5, "F", "two")]
    records, starts = run(j, f, lines)
    assert records == [lines[0], cri(2, "F", "abcdef"), lines[4]]
    assert starts == [0, len(lines[0]) + 1, sum(len(x) + 1 for x in lines[:4])]
    assert f.partial is None


def test_pending_parts_stay_on_the_stream_between_reads() -> None:
    j, _ = joiner("cri")
    f = stream()
    first = [cri(1, "P", "ab"), cri(2, "P", "cd")]
    assert run(j, f, first, first=100) == ([], [])
    assert f.partial is not None and f.partial.start == 100
    records, starts = run(j, f, [cri(3, "F", "ef")], first=200)
    assert (records, starts) == ([cri(1, "F", "abcdef")], [100])
    assert f.partial is None


def test_lines_without_partials_come_back_as_they_are() -> None:
    j, _ = joiner("docker")
    f = stream()
    lines = [docker(1, "a\n"), "not json", docker(2, "b\n", "stderr")]
    starts = [0, 10, 20]
    records, positions = j.join(f, lines, starts)
    assert records is lines and positions is starts


def test_garbage_and_the_other_stream_end_the_pending_record_in_order() -> None:
    j, _ = joiner("cri")
    f = stream()
    lines = [cri(1, "P", "o1"), "garbage", cri(2, "F", "o2"),
             cri(3, "P", "o3"), cri(4, "P", "e1", "stderr"), cri(5, "F", "e2", "stderr"), cri(6, "F", "o4")]
    records, _ = run(j, f, lines)
    assert records == [cri(1, "F", "o1"), "garbage", lines[2], cri(3, "F", "o3"), cri(4, "F", "e1e2", "stderr"),
                       lines[6]]


def test_docker_joined_and_reserialized() -> None:
    j, _ = joiner("docker")
    f = stream()
    lines = [docker(1, "part one, "), docker(2, 'with "quotes" \\ and é, '), docker(3, "end\n"),
             docker(4, "err ", "stderr"), '{"log": 1}', docker(5, "whole\n")]
    records, _ = run(j, f, lines)
    assert [orjson.loads(r) for r in records[:2]] == [
        {"log": 'part one, with "quotes" \\ and é, end\n', "stream": "stdout", "time": ts(1)},
        {"log": "err ", "stream": "stderr", "time": ts(4)},
    ]
    assert records[2:] == ['{"log": 1}', lines[5]]


def test_over_long_record_cut_and_its_rest_skipped() -> None:
    j, stats = joiner("cri", max_line_bytes=100)
    f = stream()
    lines = [cri(1, "P", "a" * 60), cri(2, "P", "b" * 60), cri(3, "P", "c" * 60), cri(4, "F", "d" * 10),
             cri(5, "F", "next")]
    records, _ = run(j, f, lines)
    assert records == [cri(1, "F", "a" * 60 + "b" * 40), lines[4]]
    assert stats.lines_truncated == 1
    assert stats.bytes_skipped == 20 + 60 + 10
    assert f.partial is None and f.partial_skip is None


def test_over_long_cut_never_splits_a_character() -> None:
    j, stats = joiner("cri", max_line_bytes=101)
    f = stream()
    records, _ = run(j, f, [cri(1, "P", "é" * 30), cri(2, "F", "é" * 30)])  # 120 bytes
    assert records == [cri(1, "F", "é" * 50)]
    assert stats.bytes_skipped == 20


def test_skipping_ends_at_the_other_streams_line() -> None:
    j, stats = joiner("cri", max_line_bytes=100)
    f = stream()
    lines = [cri(1, "P", "a" * 120), cri(2, "F", "err", "stderr"), cri(3, "F", "out rest")]
    records, _ = run(j, f, lines)
    assert records == [cri(1, "F", "a" * 100), lines[1], lines[2]]
    assert stats.bytes_skipped == 20


def test_take_hands_on_what_was_joined_so_far() -> None:
    j, _ = joiner("docker")
    f = stream()
    assert run(j, f, [docker(1, "a"), docker(2, "b")], first=7) == ([], [])
    records, starts = j.take(f)
    assert starts == [7]
    assert orjson.loads(records[0]) == {"log": "ab", "stream": "stdout", "time": ts(1)}
    assert f.partial is None and j.take(f) == ([], [])


def test_docker_whole_is_unsure_about_an_escaped_backslash_before_n() -> None:
    framing = DockerFraming()
    tricky = docker(1, "ends with a backslash and n: \\n")  # no newline: a partial
    part = framing.parse(tricky)
    assert part is not None and part.partial
    assert not framing.whole(tricky.encode(), 1)
    assert framing.whole(docker(1, "fine\n").encode(), 1)
    assert not framing.whole(docker(1, "partial").encode(), 1)


def test_cri_whole_sees_every_p_tag() -> None:
    framing = CriFraming()
    for tag in ("P", "P:x"):
        assert not framing.whole(cri(1, tag, "m").encode(), 1)
    assert not framing.whole(cri(1, "P", "m", "stderr").encode(), 1)
    assert framing.whole((cri(1, "F", "POST P /x") + "\n" + cri(2, "F:x", "ok")).encode(), 2)


MESSAGES = st.text(alphabet=st.sampled_from(list('ab\\n"\n é\t{}:,P ')), max_size=12)


@given(st.lists(st.tuples(MESSAGES, st.sampled_from(["stdout", "stderr"]), st.booleans()), min_size=1, max_size=8))
def test_docker_fast_path_never_hides_a_partial(items: list[tuple[str, str, bool]]) -> None:
    """What the reader hands on undecoded is what the joiner would have handed on unchanged."""
    lines = [docker(i, text + ("\n" if whole else ""), name) for i, (text, name, whole) in enumerate(items)]
    chunk = "\n".join(lines).encode()
    j, _ = joiner("docker")
    if j.whole(stream(), chunk, len(lines)):
        records, _ = run(j, stream(), lines)
        assert records is lines


@given(st.lists(st.tuples(st.text(alphabet=st.sampled_from(list("ab P:F\t")), max_size=10),
                          st.sampled_from(["stdout", "stderr"]), st.sampled_from(["P", "F", "P:x", "F:y", "X"])),
                min_size=1, max_size=8))
def test_cri_fast_path_never_hides_a_partial(items: list[tuple[str, str, str]]) -> None:
    lines = [cri(i, tag, text, name) for i, (text, name, tag) in enumerate(items)]
    chunk = "\n".join(lines).encode()
    j, _ = joiner("cri")
    if j.whole(stream(), chunk, len(lines)):
        records, _ = run(j, stream(), lines)
        assert records is lines
    if any(tag.startswith("P") for _, _, tag in items):
        assert not j.whole(stream(), chunk, len(lines))


def test_multiline_searches_the_message_and_joins_messages() -> None:
    framing = DockerFraming()
    asm = RecordAssembler(MultilineConfig(start=r"^\d{4}-"), message_of=framing.message, continued=framing.continued)
    f = stream()
    lines = [docker(1, "2026-11-27 ERROR boom\n"), docker(2, "\tat A.run\n"), docker(3, "2026-11-27 INFO\n")]
    records = asm.assemble(f, lines, [0, 1, 2], 0.0)
    assert [orjson.loads(r) for r in records] == [
        {"log": "2026-11-27 ERROR boom\n\tat A.run\n", "stream": "stdout", "time": ts(1)}]
    assert asm.take(f) == [lines[2]]  # a one-line record as it was, byte for byte


# --- through a FileSource -------------------------------------------------------------------------------------


async def test_cri_partials_joined_and_whole_chunks_stay_on_the_fast_path(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    before = [cri(1, "F", "before"), cri(2, "F", "POST /api 200", "stderr")]
    append(a, before)
    h = Harness(cfg(tmp_path, "cri"))
    await h.start()
    await h.wait_lines(2)
    assert isinstance(h.batches[0].lines, LineChunk)  # no partial in the chunk: undecoded
    append(a, [cri(3, "P", "part one, "), cri(4, "P", "part two, ")])
    await read_to_end(h, a)  # the parts wait on the stream for their final part
    append(a, [cri(5, "F", "end"), cri(6, "F", "after")])
    await h.wait_lines(4)
    await h.stop()
    assert h.lines == [*before, cri(3, "F", "part one, part two, end"), cri(6, "F", "after")]
    assert h.stats.lines_read == 6


async def test_docker_partials_joined(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    written = [docker(1, "one\n"), docker(2, "x" * 100), docker(3, "y" * 100), docker(4, "z\n"), docker(5, "two\n")]
    append(a, written)
    h = Harness(cfg(tmp_path, "docker"))
    await h.start()
    await h.wait_lines(3)
    await h.stop()
    assert h.lines[0] == written[0] and h.lines[2] == written[4]
    assert orjson.loads(h.lines[1]) == {"log": "x" * 100 + "y" * 100 + "z\n", "stream": "stdout", "time": ts(2)}
    assert len(h.lines) == 3


async def test_stdout_and_stderr_interleaved(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, [cri(1, "P", "out-a "), cri(2, "F", "out-b"),
               cri(3, "P", "err-a ", "stderr"), cri(4, "F", "err-b", "stderr"),
               cri(5, "P", "out-c "), cri(6, "P", "err-c ", "stderr"), cri(7, "F", "err-d", "stderr"),
               cri(8, "F", "out-d")])
    h = Harness(cfg(tmp_path, "cri"))
    await h.start()
    await h.wait_lines(5)
    await h.stop()
    # a record of one stream interrupted by the other's ends there (order kept, nothing lost)
    assert h.lines == [cri(1, "F", "out-a out-b"), cri(3, "F", "err-a err-b", "stderr"), cri(5, "F", "out-c "),
                       cri(6, "F", "err-c err-d", "stderr"), cri(8, "F", "out-d")]


async def test_garbage_between_parts(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, [docker(1, "begun "), "plain text, not docker", docker(2, "rest\n"), '{"log":"no stream\\n"}'])
    h = Harness(cfg(tmp_path, "docker"))
    await h.start()
    await h.wait_lines(4)
    await h.stop()
    assert orjson.loads(h.lines[0]) == {"log": "begun ", "stream": "stdout", "time": ts(1)}
    assert h.lines[1:] == ["plain text, not docker", docker(2, "rest\n"), '{"log":"no stream\\n"}']


async def test_crash_with_a_pending_partial_rebuilds_it_once(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    first = cri(1, "F", "first")
    append(a, [first, cri(2, "P", "aaa "), cri(3, "P", "bbb ")])
    h = Harness(cfg(tmp_path, "cri"))
    await h.start()
    await h.wait_lines(1)
    await read_to_end(h, a)
    assert position(h) == len(first) + 1  # the checkpoint waits at the first part
    await h.stop(crash=True)
    append(a, [cri(4, "F", "ccc"), cri(5, "F", "last")])
    await h.start()
    await h.wait_lines(3)
    await h.wait_idle()
    await h.stop()
    assert h.lines == [first, cri(2, "F", "aaa bbb ccc"), cri(5, "F", "last")]


@pytest.mark.parametrize("multiline", [None, {"start": "^f", "timeout": 60}])
async def test_clean_shutdown_keeps_the_partial_for_the_restart(tmp_path: Path, multiline: object) -> None:
    a = tmp_path / "a.log"
    append(a, [docker(1, "first\n"), docker(2, "aaa "), docker(3, "bbb ")])
    h = Harness(cfg(tmp_path, "docker", multiline=multiline))
    await h.start()
    await read_to_end(h, a)
    await h.stop()  # flushes a pending multiline record ("first"), never the partial
    assert h.lines == [docker(1, "first\n")]
    assert position(h) == len(docker(1, "first\n")) + 1
    append(a, [docker(4, "ccc\n")])
    await h.start()
    await read_to_end(h, a)
    await h.stop()  # (with multiline the joined record is pending until then)
    assert len(h.lines) == 2
    assert orjson.loads(h.lines[1]) == {"log": "aaa bbb ccc\n", "stream": "stdout", "time": ts(2)}


@pytest.mark.skipif(not shutil.which(LOGROTATE), reason="logrotate is not installed")
async def test_partial_split_across_logrotate(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    parts = [f"part-{i}-".ljust(300, "x") for i in range(5)]
    append(app, [cri(0, "F", "before"), cri(1, "P", parts[0]), cri(2, "P", parts[1])])
    h = Harness(cfg(tmp_path, "cri", paths=[str(logs / "*.log")], read_chunk_bytes=4096))
    await h.start()
    await h.wait_lines(1)
    await read_to_end(h, app)
    logrotate(tmp_path, app, "create")
    append(app, [cri(3, "P", parts[2]), cri(4, "P", parts[3]), cri(5, "F", parts[4]), cri(6, "F", "after")])
    await h.wait_lines(4)
    await h.wait_idle()
    await h.stop()
    assert h.lines[0] == cri(0, "F", "before")
    records = sorted(h.lines[1:])  # by time: the two files' batches may come in either order
    assert records == [cri(1, "F", parts[0] + parts[1]), cri(3, "F", "".join(parts[2:])), cri(6, "F", "after")]
    assert "".join(r.split(" ", 3)[3] for r in records[:2]) == "".join(parts)
    assert len(h.finished) == 1 and len(h.committed) == 1  # the rotated stream finished, forgotten


async def test_over_long_partial_record_cut_and_counted(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    part = "p" * 16384
    append(a, [cri(0, "F", "before"), *[cri(i, "P", part) for i in range(1, 20)], cri(20, "F", part),
               cri(21, "F", "after")])
    h = Harness(cfg(tmp_path, "cri", max_line_bytes=65536))
    await h.start()
    await h.wait_lines(3)
    await h.stop()
    assert h.lines == [cri(0, "F", "before"), cri(1, "F", "p" * 65536), cri(21, "F", "after")]
    assert h.stats.lines_truncated == 1
    assert h.stats.bytes_skipped == 20 * 16384 - 65536


async def test_fifty_megabyte_record_bounded_memory(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, [docker(0, "before\n")])
    part = docker(1, "q" * 16384) + "\n"
    h = Harness(cfg(tmp_path, "docker"))
    tracemalloc.start()
    try:
        await h.start()
        await h.wait_lines(1)
        with open(a, "a") as fh:
            for _ in range(50 * 64):  # 50 MiB of messages in 16 KiB parts
                fh.write(part)
            fh.write(docker(2, "the end\n") + "\n" + docker(3, "after\n") + "\n")
        await h.wait_lines(3, timeout=60)
        await h.stop()
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert orjson.loads(h.lines[1]) == {"log": "q" * 65536, "stream": "stdout", "time": ts(1)}
    assert h.lines[2] == docker(3, "after\n")
    assert len(h.lines) == 3
    assert h.stats.lines_truncated == 1
    assert h.stats.bytes_skipped == 50 * 64 * 16384 + len("the end\n") - 65536
    assert peak < 16 << 20, f"peak traced memory {peak / 2**20:.1f} MiB for a 50 MiB record"


TRACE = [
    "2026-11-27 10:00:00 ERROR boom",
    "java.lang.IllegalStateException: bad",
    "\tat com.example.A.run(A.java:10)",
    "\tat com.example.B.run(B.java:20)",
]


async def test_multiline_java_trace_in_cri_lines(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    # every CRI line starts with a date: the start regex must look at the message, not the framing
    append(a, [cri(1, "F", TRACE[0]), cri(2, "F", TRACE[1]), cri(3, "F", TRACE[2]),
               cri(4, "P", TRACE[3][:12]), cri(5, "F", TRACE[3][12:]), cri(6, "F", "2026-11-27 10:00:01 INFO fine")])
    h = Harness(cfg(tmp_path, "cri", multiline={"start": r"^\d{4}-\d\d-\d\d", "timeout": 60}))
    await h.start()
    await h.wait_lines(1)
    assert h.lines == [cri(1, "F", "\n".join(TRACE))]
    await h.stop()  # the pending "INFO fine" record is flushed at shutdown
    assert h.lines[1:] == [cri(6, "F", "2026-11-27 10:00:01 INFO fine")]
