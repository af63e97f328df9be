"""File source basics: discovery, start_at, partial lines, encodings, multiline, config validation."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.fileid import glob_to_regex, watch_base
from agent.lines import LineChunk
from agent.tail import MultilineConfig, TailConfig
from tests.tail_helpers import Harness, append, make_lines, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    base: dict[str, object] = {
        "name": "t",
        "paths": [str(tmp_path / "*.log")],
        "start_at": "beginning",
        "rotate_wait": 0.2,
        "poll_interval": 0.2,
    }
    base.update(kw)
    return TailConfig.model_validate(base)


# ------------------------------------------------------------------------------------------------ config


def test_config_defaults_and_validation() -> None:
    c = TailConfig(name="x", paths=["/var/log/*.log"])
    assert c.start_at == "end" and c.max_line_bytes == 65536 and c.read_chunk_bytes == 1 << 20
    assert c.max_open_files == 1024 and c.fingerprint_bytes == 256 and c.poll_interval == 1.0
    assert TailConfig(name="x", paths=["a"], max_line_bytes="1KiB", rotate_wait="500ms").max_line_bytes == 1024
    assert TailConfig(name="x", paths=["a"], encoding="GBK").encoding == "gbk"
    with pytest.raises(ValidationError, match="unknown encoding"):
        TailConfig(name="x", paths=["a"], encoding="nope-8")
    with pytest.raises(ValidationError, match="ASCII-compatible"):
        TailConfig(name="x", paths=["a"], encoding="utf-16")
    with pytest.raises(ValidationError, match="extra"):
        TailConfig(name="x", paths=["a"], bogus=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="invalid regex"):
        MultilineConfig(start="(")

    class WithRules(TailConfig):  # the app's config subclasses the tail config
        rules: list[str] = []

    assert WithRules(name="x", paths=["a"], rules=["r"]).rules == ["r"]


def test_glob_helpers() -> None:
    rx = glob_to_regex("/var/log/*.log")
    assert rx.match("/var/log/a.log") and not rx.match("/var/log/sub/a.log")
    assert glob_to_regex("/var/**/*.log").match("/var/log/sub/a.log")
    assert glob_to_regex("/var/**/*.log").match("/var/a.log")
    assert glob_to_regex("/x/[!a]?.gz").match("/x/bc.gz") and not glob_to_regex("/x/[!a]?.gz").match("/x/ac.gz")
    assert watch_base("/var/log/*.log") == ("/var/log", False)
    assert watch_base("/var/log/*/app.log") == ("/var/log", True)
    assert watch_base("/var/log/app.log") == ("/var/log", False)


# ----------------------------------------------------------------------------------------- reading basics


async def test_reads_existing_and_appended_lines(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    want = make_lines("A", 0, 500)
    append(a, want[:300])
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(300)
    append(a, want[300:])
    await h.wait_lines(500)
    await h.stop()
    h.assert_exactly(want, "append while running")
    assert h.stats.lines_read == 500
    # the fast path: lines handed on as raw bytes, decoded only where a rule looks
    assert all(isinstance(b.lines, LineChunk) for b in h.batches if b.lines)


async def test_partial_last_line_is_held_across_restart(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, make_lines("A", 0, 3))
    with open(a, "ab") as fh:
        fh.write(b"A 0000003 half")
    h = Harness(cfg(tmp_path))
    await h.start()
    await h.wait_lines(3)
    await h.stop(crash=True)
    state = json.loads(next(iter(h.committed.values())).state)
    assert state["position"] == a.stat().st_size - len(b"A 0000003 half"), "checkpoint must stay before the partial"
    with open(a, "ab") as fh:
        fh.write(b" done\n")
    await h.start()
    await h.wait_lines(4)
    await h.stop()
    assert h.lines[-1] == "A 0000003 half done"
    assert len(h.lines) == 4


async def test_start_at_end_first_start_only(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    append(a, make_lines("OLD", 0, 50))
    with open(a, "ab") as fh:
        fh.write(b"OLD partial-at-start")  # an unfinished line is completed later: read whole, not cut
    h = Harness(cfg(tmp_path, start_at="end"))
    await h.start()
    await wait_until(lambda: bool(h.committed), what="initial checkpoint for the skipped content")
    with open(a, "ab") as fh:
        fh.write(b" completed\n")
    append(a, make_lines("A", 0, 10))
    append(b, make_lines("B", 0, 10))  # appears later: read from its beginning
    await h.wait_lines(21)
    await h.stop()
    assert "OLD partial-at-start completed" in h.lines  # the unfinished line was not cut at start
    # Later start (not first): a file without a checkpoint is read from the beginning.
    c = tmp_path / "c.log"
    append(c, make_lines("C", 0, 10))
    append(a, make_lines("A", 10, 5))
    await h.start()
    await h.wait_lines(36)
    await h.stop()
    h.assert_exactly(
        ["OLD partial-at-start completed", *make_lines("A", 0, 15), *make_lines("B", 0, 10), *make_lines("C", 0, 10)],
        "start_at end (first start) / later starts",
    )


async def test_start_at_beginning(tmp_path: Path) -> None:
    append(tmp_path / "a.log", make_lines("A", 0, 20))
    h = Harness(cfg(tmp_path, start_at="beginning"))
    await h.start()
    await h.wait_lines(20)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 20), "start_at beginning")


async def test_exclude_paths_and_new_files_picked_up(tmp_path: Path) -> None:
    sub = tmp_path / "d"
    h = Harness(
        cfg(
            tmp_path,
            paths=[str(sub / "*")],
            exclude_paths=["*.gz", str(sub / "skip-*")],
            rescan_interval=30,
        )
    )
    await h.start()
    await asyncio.sleep(0.1)
    sub.mkdir()  # the directory itself appears after start
    append(sub / "a.log", make_lines("A", 0, 5))
    append(sub / "a.log.1.gz", ["GZ should not be read"])
    append(sub / "skip-me.log", ["SKIP should not be read"])
    await h.wait_lines(5, timeout=5)
    append(sub / "b.txt", make_lines("B", 0, 5))
    await h.wait_lines(10, timeout=5)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 5) + make_lines("B", 0, 5), "exclude_paths / files appearing later")


async def test_new_file_picked_up_quickly_with_inotify(tmp_path: Path) -> None:
    h = Harness(cfg(tmp_path, rescan_interval=60, poll_interval=30))
    tailer = await h.start()
    await wait_until(lambda: tailer.status()["watch_mode"] == "inotify", what="inotify watch")
    append(tmp_path / "n.log", make_lines("N", 0, 3))
    await h.wait_lines(3, timeout=2)  # far below the 30 s/60 s timers: the inotify hint did it
    append(tmp_path / "n.log", make_lines("N", 3, 3))
    await h.wait_lines(6, timeout=2)
    await h.stop()
    h.assert_exactly(make_lines("N", 0, 6))


async def test_polling_fallback_delivers(tmp_path: Path) -> None:
    h = Harness(cfg(tmp_path, poll_interval=0.1), force_polling=True)
    tailer = await h.start()
    append(tmp_path / "p.log", make_lines("P", 0, 10))
    await h.wait_lines(10, timeout=5)
    append(tmp_path / "p.log", make_lines("P", 10, 10))
    await h.wait_lines(20, timeout=5)
    assert tailer.status()["watch_mode"] == "polling"
    await h.stop()
    h.assert_exactly(make_lines("P", 0, 20), "inotify disabled: polling fallback")


async def test_observer_failure_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.observers.inotify import InotifyObserver

    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(InotifyObserver, "schedule", boom)
    h = Harness(cfg(tmp_path, poll_interval=0.1))
    tailer = await h.start()
    append(tmp_path / "p.log", make_lines("P", 0, 10))
    await h.wait_lines(10, timeout=5)
    status = tailer.status()
    assert status["watch_mode"] == "polling" and "watch limit" in status["watch_error"]
    await h.stop()
    h.assert_exactly(make_lines("P", 0, 10), "inotify watch limit: polling fallback")


async def test_empty_and_short_files(tmp_path: Path) -> None:
    e = tmp_path / "e.log"
    e.touch()
    s = tmp_path / "s.log"
    append(s, ["S1"])  # 3 bytes: far shorter than the fingerprint
    h = Harness(cfg(tmp_path, fingerprint_bytes=64))
    await h.start()
    await h.wait_lines(1)
    append(e, ["E1"])
    append(s, ["S2"])
    await h.wait_lines(3)
    await h.stop(crash=True)
    # The fingerprint grew with the file; a restart continues (does not re-read) ...
    append(s, ["S3"])
    await h.start()
    await h.wait_lines(4)
    await h.stop()
    assert sorted(h.lines) == ["E1", "S1", "S2", "S3"]
    # ... and a short file rewritten while stopped (same size!) is recognised as new content.
    s.write_bytes(b"T1\nT2\nT3\n")
    await h.start()
    await h.wait_lines(7)
    await h.stop()
    assert sorted(h.lines) == ["E1", "S1", "S2", "S3", "T1", "T2", "T3"]


async def test_identical_first_bytes_are_different_streams(tmp_path: Path) -> None:
    header = "# same header for every file ".ljust(400, "=")
    for name in ("x", "y"):
        append(tmp_path / f"{name}.log", [header, *make_lines(name.upper(), 0, 20)])
    h = Harness(cfg(tmp_path, fingerprint_bytes=256))
    await h.start()
    await h.wait_lines(42)
    await h.stop(crash=True)
    assert len(h.committed) == 2, "two files with the same first bytes keep two checkpoints"
    for name in ("x", "y"):
        append(tmp_path / f"{name}.log", make_lines(name.upper(), 20, 5))
    await h.start()
    await h.wait_lines(52)
    await h.stop()
    h.lines = [line for line in h.lines if line != header]
    h.assert_exactly(make_lines("X", 0, 25) + make_lines("Y", 0, 25), "identical first bytes, restart")


# ----------------------------------------------------------------------------------------------- encodings


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


# ----------------------------------------------------------------------------------------------- multiline

TRACE = [
    "2026-11-27 10:00:00 ERROR boom",
    "java.lang.IllegalStateException: bad",
    "\tat com.example.A.run(A.java:10)",
    "\tat com.example.B.run(B.java:20)",
]


def ml_cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return cfg(tmp_path, multiline={"start": r"^\d{4}-\d\d-\d\d ", "timeout": kw.pop("timeout", 0.3)}, **kw)


async def test_multiline_flush_on_next_start_and_timeout(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, [*TRACE, "2026-11-27 10:00:01 INFO fine"])
    h = Harness(ml_cfg(tmp_path, timeout=30))
    await h.start()
    await h.wait_lines(1)
    assert h.lines[0] == "\n".join(TRACE)
    assert h.batches[-1].data is None  # records hold newlines: no joined-bytes fast path
    await h.stop()  # shutdown flushes the pending "INFO fine" record via close()
    assert h.lines[1] == "2026-11-27 10:00:01 INFO fine"
    # Timeout flush, and the restart does not repeat anything.
    append(a, TRACE)
    await h.start(multiline=MultilineConfig(start=r"^\d{4}-", timeout=0.2))
    await h.wait_lines(3, timeout=5)
    await h.stop()
    assert h.lines[2] == "\n".join(TRACE)
    assert len(h.lines) == 3


async def test_multiline_crash_rebuilds_record(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, ["2026-11-27 first", *TRACE[:2]])
    h = Harness(ml_cfg(tmp_path, timeout=30))
    await h.start()
    await h.wait_lines(1)
    await h.stop(crash=True)  # the pending record (TRACE[:2]) is not lost: the checkpoint stayed before it
    append(a, [*TRACE[2:], "2026-11-27 last"])
    await h.start()
    await h.wait_lines(2)
    await h.stop()
    assert h.lines == ["2026-11-27 first", "\n".join(TRACE), "2026-11-27 last"]


async def test_multiline_max_lines(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, ["2026-11-27 start", *[f"  cont {i}" for i in range(7)], "2026-11-27 next"])
    h = Harness(cfg(tmp_path, multiline={"start": r"^2026", "max_lines": 3, "timeout": 30}))
    await h.start()
    await h.wait_lines(3)
    await h.stop()
    assert [rec.count("\n") + 1 for rec in h.lines] == [3, 3, 2, 1]


async def test_multiline_flushed_at_rotation(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    append(a, TRACE)
    h = Harness(ml_cfg(tmp_path, timeout=60, rotate_wait=0.1))
    await h.start()
    await wait_until(lambda: bool(h.tailer and h.tailer.status()["files"]), what="file tracked")
    os.rename(a, tmp_path / "a.log.1")  # rotated away (no longer matches *.log): finished, record flushed
    await h.wait_lines(1, timeout=5)
    await h.stop()
    assert h.lines == ["\n".join(TRACE)]
    assert h.finished and not h.committed


async def test_watched_directory_removed_and_recreated(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    h = Harness(cfg(tmp_path, paths=[str(d / "*.log")], rescan_interval=60, poll_interval=30))
    tailer = await h.start()
    append(d / "a.log", make_lines("A", 0, 3))
    await h.wait_lines(3, timeout=5)
    (d / "a.log").unlink()
    d.rmdir()
    await wait_until(lambda: not tailer.status()["files"], what="file gone")
    d.mkdir()
    append(d / "b.log", make_lines("B", 0, 3))
    await h.wait_lines(6, timeout=5)  # far below the 60 s rescan: inotify found it
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 3) + make_lines("B", 0, 3), "glob directory deleted and recreated")


async def test_unusable_checkpoint_is_forgotten(tmp_path: Path) -> None:
    from agent.source import Checkpoint

    append(tmp_path / "a.log", make_lines("A", 0, 3))
    h = Harness(cfg(tmp_path))
    h.first_start = False
    h.committed = {"junk": Checkpoint("junk", "not json"), "old": Checkpoint("old", '{"v": 99}')}
    await h.start()
    await h.wait_lines(3)
    await wait_until(lambda: "junk" not in h.committed and "old" not in h.committed, what="forgotten")
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 3))


async def test_safety_net_when_inotify_events_are_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """inotify 'works' but every event is lost: periodic rescans alone must still deliver everything."""
    from agent.tail.watch import HintBox

    monkeypatch.setattr(HintBox, "on_event", lambda self, event: None)
    append(tmp_path / "a.log", make_lines("A", 0, 5))
    h = Harness(cfg(tmp_path, rescan_interval=0.1, poll_interval=5))
    tailer = await h.start()
    await h.wait_lines(5)
    assert tailer.status()["watch_mode"] == "inotify"
    append(tmp_path / "b.log", make_lines("B", 0, 5))  # new file: the directory listing changed
    await h.wait_lines(10, timeout=5)
    append(tmp_path / "a.log", make_lines("A", 5, 5))  # a write to a known file: found by a deep rescan
    await h.wait_lines(15, timeout=5)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 10) + make_lines("B", 0, 5), "all inotify events lost: rescans")
