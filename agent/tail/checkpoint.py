"""The file source's checkpoint: a stream's identity and position as JSON, and its key.

The state is opaque to the rest of the agent (``agent/source.py``); it is written with the events of the
batch it follows and read back when the source starts again. Version 2 spells its fields out; version 1
(the first wave's ``fp``/``fpl``/``off``/``tfp``/``tl``/``skip``) is still read, so an upgrade resumes where
the old release stopped.
"""

from __future__ import annotations

import json

import structlog

from agent.fileid import fingerprint
from agent.source import Checkpoint
from agent.tail.stream import Stream, device

log = structlog.get_logger(__name__)

VERSION = 2


def encode(stream: Stream, position: int, skipping_long_line: bool, guard: bytes) -> str:
    """The state of ``stream`` standing at ``position`` (``guard``: the bytes right before it)."""
    head = stream.head
    head_fp, head_len = (fingerprint(head), len(head)) if head is not None else (stream.head_fp, stream.head_len)
    return json.dumps(
        {
            "version": VERSION,
            "path": stream.path,
            "dev": stream.dev,
            "ino": stream.ino,
            "head_fingerprint": head_fp,
            "head_length": head_len,
            "position": position,
            "guard_fingerprint": fingerprint(guard),
            "guard_length": len(guard),
            "skipping_long_line": skipping_long_line,
        },
        separators=(",", ":"),
    )


def decode(source: str, checkpoint: Checkpoint) -> Stream | None:
    """A stream to verify against the files found (``head`` unknown until then), or None if unusable."""
    try:
        s = json.loads(checkpoint.state)
        version = s.get("version", s.get("v"))
        if version == VERSION:
            names = ("head_fingerprint", "head_length", "position", "guard_fingerprint", "guard_length",
                     "skipping_long_line")
        elif version == 1:
            names = ("fp", "fpl", "off", "tfp", "tl", "skip")
        else:
            raise ValueError(f"state version {version!r}")
        head_fp, head_len, position, guard_fp, guard_len, skipping = names
        stream = Stream(path=str(s["path"]), dev=device(int(s["dev"])), ino=int(s["ino"]), key=checkpoint.key)
        stream.head_fp, stream.head_len = str(s[head_fp]), int(s[head_len])
        stream.consumed = stream.read_end = stream.checkpoint_pos = stream.size = int(s[position])
        stream.guard_fp, stream.guard_len = str(s.get(guard_fp, "")), int(s.get(guard_len, 0))
        stream.skipping_long_line = stream.checkpoint_skipping = bool(s.get(skipping, False))
        return stream
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("tail.bad_checkpoint", source=source, key=checkpoint.key, error=str(exc))
        return None


def stored_path(state: str) -> str:
    """The path a (possibly unusable) state names, for the batch that forgets it."""
    try:
        return str(json.loads(state).get("path", ""))
    except (ValueError, TypeError, AttributeError):
        return ""


class StreamKeys:
    """Hands out checkpoint keys, unique within the source (a reused inode gets ``~2``, ``~3`` ...)."""

    def __init__(self, taken: set[str]) -> None:
        self._taken = set(taken)

    def ensure(self, stream: Stream) -> str:
        if stream.key is None:
            base = f"{stream.dev}:{stream.ino}:{fingerprint(stream.head or b'')}"
            key, n = base, 1
            while key in self._taken:
                n += 1
                key = f"{base}~{n}"
            self._taken.add(key)
            stream.key = key
        return stream.key
