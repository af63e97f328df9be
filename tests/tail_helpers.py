"""Test harness for the file source: a consumer that commits checkpoints the way the outbox does.

The harness is the downstream in miniature: it takes batches off a bounded queue, "commits" each batch's
lines and checkpoint together (in order), forgets a key on ``finished``, and restarts a fresh FileSource from
exactly the committed checkpoints. A crash drops whatever was queued but not committed, so any line that
is delivered twice or never shows a real bug in the checkpoint contract.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from agent.lines import LineChunk
from agent.source import Batch, Checkpoint
from agent.tail import FileSource, TailConfig, TailStats

LOGROTATE = "/usr/sbin/logrotate"


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition with a deadline; the failure says what never happened (never sleep-as-assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def tail_config(tmp_path: Path, **overrides: object) -> TailConfig:
    """A FileSource config for ``tmp_path/*.log``, read from the beginning, polled every 0.2 s; ``overrides``
    replace or add fields (each test file's one-line ``cfg`` adds the ``name`` and ``rotate_wait`` it had)."""
    base: dict[str, object] = {
        "paths": [str(tmp_path / "*.log")],
        "start_at": "beginning",
        "poll_interval": 0.2,
    }
    base.update(overrides)
    return TailConfig.model_validate(base)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def make_lines(tag: str, start: int, count: int, width: int = 40) -> list[str]:
    """Unique, recognisable lines (tag + sequence number), padded to ``width`` characters."""
    return [f"{tag} {i:07d} ".ljust(width, "x") for i in range(start, start + count)]


def append(path: Path | str, lines: Iterable[str], encoding: str = "utf-8") -> None:
    with open(path, "ab") as fh:
        fh.write("".join(line + "\n" for line in lines).encode(encoding))


def logrotate(tmp: Path, target: Path | str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run the real logrotate once (-f) with its own config and state file in ``tmp``."""
    conf = tmp / "logrotate.conf"
    body = "\n".join(f"    {o}" for o in ("rotate 5", "missingok", "nomail", *options))
    conf.write_text(f"{target} {{\n{body}\n}}\n")
    os.chmod(conf, 0o644)
    proc = subprocess.run(
        [LOGROTATE, "-f", "-s", str(tmp / "logrotate.state"), str(conf)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, f"logrotate failed: {proc.stderr}"
    return proc


def report(scenario: str, written: int, delivered: list[str]) -> None:
    """Append a row to $DUTYTAIL_TAIL_REPORT (JSON lines) for the scenario table; a no-op otherwise."""
    target = os.environ.get("DUTYTAIL_TAIL_REPORT")
    if not target:
        return
    dups = len(delivered) - len(set(delivered))
    with open(target, "a") as fh:
        fh.write(json.dumps({"scenario": scenario, "written": written, "delivered": len(delivered), "dups": dups}))
        fh.write("\n")


class Harness:
    """Runs FileSources one after another over the same committed checkpoints."""

    def __init__(self, config: TailConfig, *, queue_size: int = 16, force_polling: bool = False) -> None:
        self.config = config
        self.queue_size = queue_size
        self.force_polling = force_polling
        self.committed: dict[str, Checkpoint] = {}
        self.lines: list[str] = []
        self.batches: list[Batch] = []
        self.finished: list[str] = []
        self.first_start = True
        self.stats = TailStats()
        self.tailer: FileSource | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.max_fds = 0
        self.slow = 0.0
        """Seconds the consumer spends per batch: makes the tailer lag behind the writer."""
        self._queue: asyncio.Queue[Batch] | None = None
        self._base = (0, 0)
        self._run: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None

    async def start(self, **overrides: Any) -> FileSource:
        assert self._run is None, "already running"
        config = self.config.model_copy(update=overrides) if overrides else self.config
        self.tailer = FileSource(
            config,
            dict(self.committed),
            is_first_start=self.first_start,
            stats=self.stats,
            force_polling=self.force_polling,
        )
        self.first_start = False
        self._base = (len(self.batches), self.stats.batches)
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._consumer = asyncio.create_task(self._consume(self._queue))
        self._run = asyncio.create_task(self.tailer.run(self._queue))
        return self.tailer

    async def _consume(self, queue: asyncio.Queue[Batch]) -> None:
        while True:
            await self.gate.wait()
            batch = await queue.get()
            if self.slow:
                await asyncio.sleep(self.slow)
            self.check_batch(batch)
            self.batches.append(batch)
            self.lines.extend(batch.lines)
            if batch.checkpoint is not None:
                if batch.finished:
                    self.committed.pop(batch.checkpoint.key, None)
                    self.finished.append(batch.checkpoint.key)
                else:
                    self.committed[batch.checkpoint.key] = batch.checkpoint
            self.max_fds = max(self.max_fds, fd_count())
            queue.task_done()

    @staticmethod
    def check_batch(batch: Batch) -> None:
        if batch.data is not None:
            assert batch.data == b"\n".join(line.encode() for line in batch.lines), "data != joined lines"
        if isinstance(batch.lines, LineChunk):
            assert batch.data is None
            # the chunk's invariants, checked the slow way
            assert batch.lines.data.decode("utf-8").split("\n") == list(batch.lines), "chunk != its lines"
            assert len(batch.lines) == batch.lines.data.count(b"\n") + 1, "chunk line count"
            assert batch.lines.ascii == batch.lines.data.isascii(), "chunk ascii flag"
        if batch.lines:
            assert batch.checkpoint is not None
        if batch.checkpoint is not None and not batch.finished:
            assert json.loads(batch.checkpoint.state)["version"] == 2

    async def stop(self, *, crash: bool = False) -> None:
        """Graceful: cancel run, flush via close(), let the consumer commit everything queued.

        crash: the consumer dies first and whatever sat in the queue is lost (like a kill -9 of the agent,
        where only committed checkpoints survive)."""
        assert self._run is not None and self._consumer is not None and self.tailer is not None
        self.gate.set()
        if crash:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        self._run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._run
        if crash:
            await self.tailer.close(None)
        else:
            await self.tailer.close(self._queue)
            assert self._queue is not None
            await asyncio.wait_for(self._queue.join(), 10)
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        self._run = self._consumer = None

    async def wait_lines(self, count: int, timeout: float = 15.0) -> None:
        try:
            await wait_until(lambda: len(self.lines) >= count, timeout, f"{count} lines")
        except AssertionError as exc:
            have = collections.Counter(line.split(" ", 1)[0] for line in self.lines)
            raise AssertionError(f"{exc} (have {len(self.lines)}: {dict(sorted(have.items()))})") from None

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until every file's checkpoint caught up with its size and rotated files were finished."""

        def caught_up() -> bool:
            assert self.tailer is not None
            status = self.tailer.status()
            # ... and every batch the tailer produced was committed (none still in its hands).
            handed_out = self.stats.batches - self._base[1] == len(self.batches) - self._base[0]
            return handed_out and all(f["lag_bytes"] == 0 and f["state"] != "draining" for f in status["files"])

        await wait_until(caught_up, timeout, "tailer to catch up")

    def assert_exactly(self, expected: list[str], scenario: str | None = None) -> None:
        """Every expected line delivered once, nothing else; order preserved per tag (file)."""
        if scenario:
            report(scenario, len(expected), self.lines)
        counts = collections.Counter(self.lines)
        dups = {line: n for line, n in counts.items() if n > 1}
        missing = [line for line in expected if line not in counts]
        wanted = set(expected)
        extra = [line for line in counts if line not in wanted]
        assert not dups, f"{len(dups)} duplicated lines, e.g. {list(dups)[:3]}"
        tags = sorted({line.split(" ", 1)[0] for line in missing})
        assert not missing, f"{len(missing)} missing lines, e.g. {missing[:3]} (of {tags})"
        assert not extra, f"{len(extra)} unexpected lines, e.g. {extra[:3]}"
        by_tag: dict[str, list[str]] = collections.defaultdict(list)
        for line in self.lines:
            by_tag[line.split(" ", 1)[0]].append(line)
        want_by_tag: dict[str, list[str]] = collections.defaultdict(list)
        for line in expected:
            want_by_tag[line.split(" ", 1)[0]].append(line)
        for tag, got in by_tag.items():
            assert got == want_by_tag[tag], f"lines of {tag} out of order"
