"""Discovery's globs: the same files as ``glob.glob``, each directory walked once (a symlink loop under ``**``
used to keep a core busy forever)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from agent.tail import TailConfig
from agent.tail.globs import expand_glob
from tests.tail_helpers import Harness, append, make_lines


def tree(root: Path) -> None:
    for d in ("a/b/c", "a/.hidden", "x/y"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for f in ("top.log", "a/1.log", "a/b/2.log", "a/b/c/3.log", "a/.hidden/4.log", "x/5.txt", "x/y/6.log",
              "a/.7.log"):
        (root / f).write_text("")


def test_the_same_files_as_glob_on_a_tree_without_links(tmp_path: Path) -> None:
    tree(tmp_path)
    for pattern in ("**/*.log", "*/*.log", "a/**/*.log", "*/b/*.log", "a/*/c/*.log", "**/.*.log", "**/y/*.log",
                    "*.log", "a/b/**/*.log", "nope/**/*.log"):
        full = f"{tmp_path}/{pattern}"
        assert expand_glob(full) == sorted(glob.glob(full, recursive=True)), pattern


def test_a_symlink_loop_is_walked_once(tmp_path: Path) -> None:
    tree(tmp_path)
    os.symlink("..", tmp_path / "a" / "b" / "up")  # a/b/up -> a: a loop under **
    os.symlink(tmp_path / "x", tmp_path / "a" / "to-x")  # a second way into x
    found = expand_glob(f"{tmp_path}/**/*.log")
    real = {os.path.realpath(p) for p in found}
    assert real == {str(tmp_path / f) for f in ("top.log", "a/1.log", "a/b/2.log", "a/b/c/3.log", "x/y/6.log")}
    assert len(found) == len(real), "each file found once, whatever the number of ways to it"


async def test_a_source_tails_through_a_symlink_loop(tmp_path: Path) -> None:
    (tmp_path / "logs" / "app").mkdir(parents=True)
    os.symlink("..", tmp_path / "logs" / "app" / "loop")
    os.symlink("..", tmp_path / "logs" / "app" / "again")  # two loops: glob.glob's walk doubles per level
    append(tmp_path / "logs" / "app" / "a.log", make_lines("A", 0, 3))
    h = Harness(TailConfig(name="loop", paths=[str(tmp_path / "logs" / "**" / "*.log")], start_at="beginning",
                           poll_interval=0.2, rotate_wait=0.2))
    await h.start()
    await h.wait_lines(3)
    append(tmp_path / "logs" / "app" / "a.log", make_lines("A", 3, 3))
    await h.wait_lines(6)
    await h.stop()
    h.assert_exactly(make_lines("A", 0, 6))
