"""journald source: follows ``journalctl --follow --output=json`` and resumes from the saved cursor.

A subprocess instead of bindings: ``journalctl`` is on every systemd host, handles journal rotation,
vacuuming and namespaces itself, and the cursor it prints is the one thing we need to persist. The cursor
travels as the batch checkpoint and is committed with the batch's events, exactly like file offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import structlog

from agent.model import FieldError, Meta, Model, field
from agent.source import Batch, Checkpoint, SourceStats
from agent.units import Duration

log = structlog.get_logger(__name__)

PRIORITIES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]
CHECKPOINT_KEY = "journal"


class JournalConfig(Model):
    """`journal:` entry (without its rules): which entries to follow."""

    name: str
    units: list[str] = field(default_factory=list)  # systemd units (-u), OR-ed; empty = all
    priority: str | None = None  # e.g. "err" or "0..4": passed to journalctl -p
    matches: list[str] = field(default_factory=list)  # raw journalctl matches, e.g. "SYSLOG_IDENTIFIER=sshd"
    start_at: Literal["end", "beginning"] = "end"
    file: str | None = None  # read a journal file instead of the system journal (journalctl --file)
    directory: str | None = None  # journal directory (journalctl --directory)
    journalctl: str = "journalctl"
    batch_lines: Annotated[int, Meta(ge=1)] = 1000
    batch_wait: Duration = 0.05
    retry_interval: Duration = 30.0

    def __post_init__(self) -> None:
        for part in (self.priority or "").split(".."):
            if part and part not in PRIORITIES and not (part.isdigit() and 0 <= int(part) <= 7):
                raise FieldError("priority",
                                 f"priority must be one of {PRIORITIES} or 0..7 (a range like err..crit works)")


@dataclass(slots=True)
class JournalStats(SourceStats):
    restarts: int = 0


def _message(entry: dict[str, Any]) -> str:
    """MESSAGE is a string, or a list of byte values when it was not valid UTF-8."""
    raw = entry.get("MESSAGE", "")
    if isinstance(raw, list):
        return bytes(b for b in raw if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
    return "" if raw is None else str(raw)


FRIENDLY_FIELDS = ("unit", "priority", "identifier", "pid")


def entry_fields(entry: dict[str, Any]) -> dict[str, str]:
    """An entry's fields for templates and ``where``: the friendly four (``unit``, ``priority``,
    ``identifier``, ``pid``) and every journald field with a text value under its own name (``_COMM``,
    ``CONTAINER_NAME`` ...); the message and the cursor fields (``__...``) aside."""
    fields = {k: v for k, v in entry.items() if isinstance(v, str) and k != "MESSAGE" and not k.startswith("__")}
    fields.update(unit=str(entry.get("_SYSTEMD_UNIT", "")), priority=str(entry.get("PRIORITY", "")),
                  identifier=str(entry.get("SYSLOG_IDENTIFIER", "")), pid=str(entry.get("_PID", "")))
    return fields


class JournalSource:
    """Follows the journal (the source contract is ``agent/source.py``)."""

    def __init__(self, config: JournalConfig, checkpoints: dict[str, Checkpoint], *, is_first_start: bool) -> None:
        self.config = config
        self.stats = JournalStats()
        self.cursor: str | None = None
        saved = checkpoints.get(CHECKPOINT_KEY)
        if saved is not None:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                self.cursor = json.loads(saved.state)["cursor"]
        self.is_first_start = is_first_start
        self.error = ""
        self.available = True
        self.last_entry: float | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def first_scan_done(self) -> bool:
        return True  # no files to find: journalctl starts reading at once

    async def close(self, queue: asyncio.Queue[Batch] | None = None) -> None:
        """Nothing to hand on or free: ``run`` stops journalctl when it is cancelled."""

    def command(self) -> list[str]:
        cfg = self.config
        cmd = [cfg.journalctl, "--follow", "--output=json", "--no-pager", "--all"]
        if cfg.file:
            cmd.append(f"--file={cfg.file}")
        if cfg.directory:
            cmd.append(f"--directory={cfg.directory}")
        if self.cursor:
            cmd.append(f"--after-cursor={self.cursor}")
        elif self.is_first_start and cfg.start_at == "end":
            cmd.append("--lines=0")
        else:
            cmd.append("--lines=all")
        for unit in cfg.units:
            cmd.append(f"--unit={unit}")
        if cfg.priority:
            cmd.append(f"--priority={cfg.priority}")
        cmd.extend(cfg.matches)
        return cmd

    async def run(self, queue: asyncio.Queue[Batch]) -> None:
        """Follow until cancelled; restart journalctl with backoff if it exits, and report why."""
        while True:
            if shutil.which(self.config.journalctl) is None:
                self._fail(f"{self.config.journalctl} not found: journald is not available on this host")
            else:
                await self._follow_once(queue)
            await asyncio.sleep(self.config.retry_interval if not self.available else 1.0)
            self.stats.restarts += 1

    def _fail(self, message: str) -> None:
        if message != self.error:
            log.error("journal_unavailable", source=self.config.name, error=message)
        self.error = message
        self.available = False

    async def _follow_once(self, queue: asyncio.Queue[Batch]) -> None:
        self._proc = proc = await asyncio.create_subprocess_exec(
            *self.command(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.create_task(proc.stderr.read(64 * 1024))
        try:
            await self._read(proc.stdout, queue)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(proc.wait(), 2.0)
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            stderr = b""
            with contextlib.suppress(Exception):
                stderr = await asyncio.wait_for(stderr_task, 1.0)
            if not stderr_task.done():
                stderr_task.cancel()
        if proc.returncode not in (0, None, -15):
            text = stderr.decode("utf-8", "replace").strip() or f"journalctl exited with {proc.returncode}"
            self._fail(text.splitlines()[-1])

    async def _read(self, stdout: asyncio.StreamReader, queue: asyncio.Queue[Batch]) -> None:
        lines: list[str] = []
        fields: list[dict[str, str]] = []
        cursor = self.cursor
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    raw = await stdout.readline()
            except TimeoutError:
                raw = None
            except ValueError:  # a single entry over the stream limit: skip it, count it
                self.stats.lines_truncated += 1
                continue
            if raw == b"":
                if lines:
                    await self._emit(queue, lines, fields, cursor)
                return
            if raw is not None:
                self.available, self.error = True, ""
                self.stats.bytes_read += len(raw)
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                cursor = entry.get("__CURSOR", cursor)
                lines.append(_message(entry))
                fields.append(entry_fields(entry))
                self.stats.lines_read += 1
                self.last_entry = time.time()
                if deadline is None:
                    deadline = time.monotonic() + self.config.batch_wait
            if lines and (len(lines) >= self.config.batch_lines or raw is None):
                await self._emit(queue, lines, fields, cursor)
                lines, fields, deadline = [], [], None

    async def _emit(self, queue: asyncio.Queue[Batch], lines: list[str], fields: list[dict[str, str]],
                    cursor: str | None) -> None:
        self.cursor = cursor
        checkpoint = Checkpoint(CHECKPOINT_KEY, json.dumps({"cursor": cursor})) if cursor else None
        await queue.put(Batch(source=self.config.name, path="journald", lines=lines, checkpoint=checkpoint,
                              fields=fields))

    def status(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "error": self.error or None,
            "cursor": self.cursor,
            "lines_read": self.stats.lines_read,
            "last_entry": self.last_entry,
            "restarts": self.stats.restarts,
            "files": [],
        }
