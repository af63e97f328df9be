"""The file checkpoint's state: readable version-2 fields, the first wave's version 1 still read, keys; a
checkpoint the source cannot use is forgotten."""

from __future__ import annotations

import json
from pathlib import Path

from agent.source import Checkpoint
from agent.tail import TailConfig, checkpoint
from agent.tail.stream import Stream
from tests.tail_helpers import Harness, append, make_lines, tail_config, wait_until


def cfg(tmp_path: Path, **kw: object) -> TailConfig:
    return tail_config(tmp_path, **{"name": "t", "rotate_wait": 0.2, **kw})


def test_version_2_spells_its_fields_out_and_round_trips() -> None:
    s = Stream(path="/var/log/app.log", dev=64, ino=1234, head=b"first bytes", key="k")
    state = json.loads(checkpoint.encode(s, 4096, False, b"line before\n"))
    assert state == {
        "version": 2, "path": "/var/log/app.log", "dev": 64, "ino": 1234,
        "head_fingerprint": state["head_fingerprint"], "head_length": 11, "position": 4096,
        "guard_fingerprint": state["guard_fingerprint"], "guard_length": 12, "skipping_long_line": False,
    }
    back = checkpoint.decode("src", Checkpoint("k", json.dumps(state)))
    assert back is not None
    assert (back.path, back.dev, back.ino, back.key) == ("/var/log/app.log", 64, 1234, "k")
    assert (back.consumed, back.read_end, back.checkpoint_pos, back.size) == (4096, 4096, 4096, 4096)
    assert (back.head_fp, back.head_len) == (state["head_fingerprint"], 11)
    assert (back.guard_fp, back.guard_len) == (state["guard_fingerprint"], 12)
    assert back.head is None, "a restored stream is verified against the file before it is trusted"


def test_version_1_of_the_first_wave_is_read() -> None:
    old = ('{"v":1,"path":"/tmp/app.log","dev":65024,"ino":2154551,"fp":"92f4b3f5a54166fc","fpl":256,'
           '"off":1057,"tfp":"3ad0a7ce0d42991d","tl":128,"skip":true}')
    back = checkpoint.decode("src", Checkpoint("65024:2154551:92f4b3f5a54166fc", old))
    assert back is not None
    assert (back.consumed, back.head_fp, back.head_len, back.guard_fp, back.guard_len) == (
        1057, "92f4b3f5a54166fc", 256, "3ad0a7ce0d42991d", 128)
    assert back.skipping_long_line and back.checkpoint_skipping


def test_unusable_states_are_refused() -> None:
    for state in ("not json", '{"v": 99}', '{"version": 2}', "[]", '{"version": 2, "path": "p", "dev": "x"}'):
        assert checkpoint.decode("src", Checkpoint("k", state)) is None, state
    assert checkpoint.stored_path('{"path": "/a"}') == "/a" and checkpoint.stored_path("junk") == ""


def test_keys_are_unique_within_a_source() -> None:
    keys = checkpoint.StreamKeys({"1:2:" + "0" * 0})
    a, b = Stream(path="a", dev=1, ino=2, head=b""), Stream(path="b", dev=1, ino=2, head=b"")
    ka, kb = keys.ensure(a), keys.ensure(b)
    assert ka != kb and kb == f"{ka}~2" and keys.ensure(a) == ka


# --- a checkpoint the source cannot use -----------------------------------------------------------------------


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
