"""The ledger of rotated siblings: what is there before the source starts is history, a renamed generation
the source followed is known, anything else under a rotated name is a generation never read."""

from __future__ import annotations

import os
from pathlib import Path

from agent.tail.globs import PathFilter
from agent.tail.siblings import Siblings
from agent.tail.stream import Stream


def ledger(directory: Path, pattern: str = "app.log") -> Siblings:
    return Siblings(PathFilter([str(directory / pattern)], []), fingerprint_bytes=64)


def opened_names(found: list[tuple[str, int, bool]]) -> list[str]:
    for _path, fd, _compressed in found:
        os.close(fd)
    return [os.path.basename(path) for path, _fd, _compressed in found]


def test_history_known_generations_and_new_ones(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("live\n")
    (tmp_path / "app.log.1").write_text("yesterday\n")
    (tmp_path / "other.log.1").write_text("not a sibling\n")
    siblings = ledger(tmp_path)
    assert siblings.active
    siblings.baseline()
    assert opened_names(siblings.unread(set(), set)) == [], "what was there at the start is history"
    (tmp_path / "app.log.2").write_text("born and renamed before it was opened\n")
    assert opened_names(siblings.unread(set(), set)) == ["app.log.2"]
    assert opened_names(siblings.unread(set(), set)) == [], "found once"
    os.rename(tmp_path / "app.log.2", tmp_path / "app.log.3")  # renamed on: same identity, same content
    assert opened_names(siblings.unread(set(), set)) == []


def test_a_reused_inode_with_other_content_is_new(tmp_path: Path) -> None:
    target = tmp_path / "app.log.4"
    target.write_text("old backup\n")
    siblings = ledger(tmp_path)
    siblings.baseline()
    with open(target, "r+") as f:  # the same inode number, other content: what inode reuse looks like
        f.write("a new generation, longer than the old one\n")
    assert opened_names(siblings.unread(set(), set)) == ["app.log.4"]


def test_an_archive_is_new_unless_its_content_was_read(tmp_path: Path) -> None:
    import gzip

    siblings = ledger(tmp_path)
    siblings.baseline()
    read_whole = tmp_path / "app.log.1"
    read_whole.write_text("a generation the source read whole\n")
    st = read_whole.stat()
    fd = os.open(read_whole, os.O_RDONLY)
    try:
        siblings.record(Stream(path=str(read_whole), dev=st.st_dev, ino=st.st_ino, fd=fd))
    finally:
        os.close(fd)
    with gzip.open(tmp_path / "app.log.1.gz", "wb") as archive:  # compressed after it was read: known
        archive.write(read_whole.read_bytes())
    read_whole.unlink()
    with gzip.open(tmp_path / "app.log.2.gz", "wb") as archive:  # compressed before anyone read it: new
        archive.write(b"a generation rotated and compressed unread\n")
    found = siblings.unread(set(), set)
    assert [(os.path.basename(p), c) for p, _fd, c in found] == [("app.log.2.gz", True)]
    opened_names(found)


def test_followed_copies_compressed_and_empty_are_not_generations(tmp_path: Path) -> None:
    siblings = ledger(tmp_path)
    siblings.baseline()
    followed = tmp_path / "app.log.1"
    followed.write_text("followed by the source\n")
    copy = tmp_path / "app.log.2"
    copy.write_text("content of the live file\n")
    (tmp_path / "app.log.3.gz").write_bytes(b"\x1f\x8b\x08\x00rest")
    (tmp_path / "app.log.5").write_text("")
    st = followed.stat()
    from agent.fileid import fingerprint

    heads = {fingerprint(b"content of the live file\n")}
    assert opened_names(siblings.unread({(st.st_dev, st.st_ino)}, lambda: heads)) == []


def test_a_finished_stream_is_recorded(tmp_path: Path) -> None:
    siblings = ledger(tmp_path)
    siblings.baseline()
    path = tmp_path / "app.log.1"
    path.write_text("read whole by the source\n")
    st = path.stat()
    fd = os.open(path, os.O_RDONLY)
    try:
        siblings.record(Stream(path=str(path), dev=st.st_dev, ino=st.st_ino, fd=fd))
    finally:
        os.close(fd)
    assert opened_names(siblings.unread(set(), set)) == []


def test_only_names_without_wildcards_have_siblings(tmp_path: Path) -> None:
    assert not ledger(tmp_path, "app.log*").active  # the glob itself finds rotated names
